//! Embedding lookup: the rows of a `[V, E]` table picked by integer token ids.
//! Backward scatter-adds each output row's gradient into the row it came from
//! (a token that repeats collects every one), except the padding row, which
//! `nn.Embedding(padding_idx=…)` keeps out of training.

use crate::autograd::{node, GradFn};
use crate::error::{arg_err, shape_err, Result};
use crate::layout::fmt_shape;
use crate::ops::with_typed;
use crate::{Element, Tensor};

/// `out[i] = table[ids[i]]`, rows of width `e`.
fn gather_rows<T: Element>(table: &[T], ids: &[usize], e: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(ids.len() * e);
    for &id in ids {
        out.extend_from_slice(&table[id * e..(id + 1) * e]);
    }
    out
}

/// `table_grad[ids[i]] += grad[i]` for every `i` whose id is not `padding_idx`.
fn scatter_rows<T: Element>(grad: &[T], ids: &[usize], e: usize, rows: usize, padding_idx: Option<usize>) -> Vec<T> {
    let mut out = vec![T::zero(); rows * e];
    for (g, &id) in grad.chunks_exact(e.max(1)).zip(ids) {
        if Some(id) != padding_idx {
            for (o, &v) in out[id * e..(id + 1) * e].iter_mut().zip(g) {
                *o += v;
            }
        }
    }
    out
}

struct EmbeddingBackward {
    table: Tensor,
    ids: Vec<usize>,
    padding_idx: Option<usize>,
}

impl GradFn for EmbeddingBackward {
    fn name(&self) -> &'static str {
        "embedding"
    }
    fn inputs(&self) -> Vec<Tensor> {
        vec![self.table.clone()]
    }
    fn backward(&self, _o: &Tensor, g: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let [rows, e] = self.table.shape()[..] else {
            unreachable!("checked in the forward pass")
        };
        let gs = g.contiguous_storage();
        let out = with_typed!(&gs, v => Element::into_storage(scatter_rows(v, &self.ids, e, rows, self.padding_idx)));
        Ok(vec![Some(Tensor::from_storage(out, self.table.shape()))])
    }
}

impl Tensor {
    /// The rows of this `[V, E]` table at `ids` (row-major, of shape
    /// `ids_shape`), as a tensor of shape `ids_shape + [E]`. The row
    /// `padding_idx`, if given, receives no gradient.
    pub fn embedding(&self, ids: &[usize], ids_shape: &[usize], padding_idx: Option<usize>) -> Result<Tensor> {
        let [rows, e] = self.shape()[..] else {
            return shape_err(
                "embedding",
                format!(
                    "the table must be [num_embeddings, embedding_dim], got {}",
                    fmt_shape(self.shape())
                ),
            );
        };
        if ids.len() != ids_shape.iter().product::<usize>() {
            return shape_err(
                "embedding",
                format!("{} ids do not fill the shape {}", ids.len(), fmt_shape(ids_shape)),
            );
        }
        if let Some((i, &bad)) = ids.iter().enumerate().find(|(_, &v)| v >= rows) {
            return arg_err("embedding", format!("id {bad} at position {i} is not below {rows}"));
        }
        if let Some(p) = padding_idx.filter(|&p| p >= rows) {
            return arg_err("embedding", format!("padding_idx {p} is not below {rows}"));
        }
        let table = self.contiguous_storage();
        let out = with_typed!(&table, v => Element::into_storage(gather_rows(v, ids, e)));
        let shape: Vec<usize> = ids_shape.iter().copied().chain([e]).collect();
        Ok(Tensor::from_storage(out, &shape).attach(&[self], || {
            node(EmbeddingBackward {
                table: self.clone(),
                ids: ids.to_vec(),
                padding_idx,
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, rand64};
    use crate::{DType, Tensor};

    #[test]
    fn rows_by_id_in_the_shape_of_the_ids() {
        let table = Tensor::arange(0.0, 8.0, 1.0, DType::F32)
            .unwrap()
            .reshape(&[4, 2])
            .unwrap();
        let y = table.embedding(&[3, 0, 3, 1, 2, 2], &[2, 3], None).unwrap();
        assert_eq!(y.shape(), &[2, 3, 2]);
        assert_eq!(
            y.to_vec::<f32>().unwrap(),
            vec![6.0, 7.0, 0.0, 1.0, 6.0, 7.0, 2.0, 3.0, 4.0, 5.0, 4.0, 5.0]
        );
        // A transposed view is read as the table it shows.
        let t = table.t().unwrap().contiguous().t().unwrap();
        assert_eq!(
            t.embedding(&[1], &[1], None).unwrap().to_vec::<f32>().unwrap(),
            vec![2.0, 3.0]
        );
    }

    #[test]
    fn gradient_scatter_adds_repeats_and_skips_padding() {
        let table = rand64(&[5, 3], 1).requires_grad_(true);
        let g = table
            .embedding(&[1, 4, 1, 0, 1], &[5], Some(4))
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        let want = [1.0, 3.0, 0.0, 0.0, 0.0];
        let got = g.get(&table).unwrap().to_vec_f64();
        for (row, w) in want.iter().enumerate() {
            assert_eq!(got[row * 3..row * 3 + 3], [*w; 3], "row {row}");
        }
    }

    #[test]
    fn gradcheck_with_and_without_padding() {
        let table = rand64(&[6, 4], 2);
        check(|t| t[0].embedding(&[5, 0, 2, 2, 1, 5], &[2, 3], None), &[table.clone()]);
        // The padding row's gradient is zero by definition, not by calculus: the
        // check covers the other rows (the test above covers that one).
        check(
            |t| Ok(t[0].embedding(&[5, 0, 2, 2, 1, 5], &[3, 2], Some(3))?.square()),
            &[table.clone()],
        );
        check(|t| t[0].t()?.t()?.embedding(&[3], &[1, 1], Some(0)), &[table]);
    }

    #[test]
    fn bad_tables_ids_and_padding_are_errors() {
        let table = rand64(&[3, 2], 3);
        let err = |r: crate::Result<Tensor>| r.unwrap_err().to_string();
        assert_eq!(
            err(table.embedding(&[0, 3], &[2], None)),
            "embedding: id 3 at position 1 is not below 3"
        );
        assert_eq!(
            err(table.embedding(&[0], &[1], Some(3))),
            "embedding: padding_idx 3 is not below 3"
        );
        assert_eq!(
            err(table.embedding(&[0, 1], &[3], None)),
            "embedding: 2 ids do not fill the shape [3]"
        );
        assert_eq!(
            err(rand64(&[6], 4).embedding(&[0], &[1], None)),
            "embedding: the table must be [num_embeddings, embedding_dim], got [6]"
        );
    }
}
