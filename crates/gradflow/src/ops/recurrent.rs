//! The recurrence of an RNN, LSTM or GRU layer over a whole sequence, as one
//! op: forward runs the steps, backward runs backpropagation through time with
//! one fused gate kernel per step (kernels/recurrent.rs).
//!
//! The op takes the input projection `x W_ihᵀ + b_ih` of every step, computed
//! by the caller as one matrix product, so only the hidden-to-hidden product
//! is done step by step.

use crate::autograd::{node, GradFn};
use crate::error::{arg_err, Result};
pub use crate::kernels::recurrent::Cell;
use crate::kernels::recurrent::{bias_grad, cell_backward, cell_forward, hidden_product, hidden_product_dh};
use crate::kernels::recurrent::{hidden_product_dw, StepGrad, StepIo};
use crate::storage::CpuStorage;
use crate::{Element, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Where backpropagation through time leaves ‖∂L/∂h_t‖ for each time step `t`:
/// the norm, over the batch and the hidden units, of the total gradient
/// reaching the hidden state (the step's output gradient plus what the later
/// steps pass back). The diagnostics hand one to the op only on the steps
/// they sample, so an unsampled step computes no norm at all. Clones share
/// the slot, so the caller keeps one and the graph fills the other.
#[derive(Debug, Clone, Default)]
pub struct HiddenGradNorms(Arc<Mutex<Option<Vec<f64>>>>);

impl HiddenGradNorms {
    /// The norms in time order, once a backward pass has run through the op.
    pub fn get(&self) -> Option<Vec<f64>> {
        self.0.lock().expect("norms lock").clone()
    }
    fn set(&self, norms: Vec<f64>) {
        *self.0.lock().expect("norms lock") = Some(norms);
    }
}

/// The squared Frobenius norm of `v` in f64 (the parts of a batch add theirs).
fn sq_norm_f64<T: Element>(v: &[T]) -> f64 {
    v.iter().map(|x| x.to_f64().unwrap_or(f64::NAN).powi(2)).sum::<f64>()
}

/// Below this many multiply-adds of hidden products (over all steps) the batch
/// is not split: a part of a small batch costs more in hand-offs than it saves.
const SPLIT_MIN: usize = 1 << 22;
/// The fewest samples a part of the batch gets: fewer make the step products too
/// thin for the GEMM kernel.
const PART_MIN: usize = 8;

/// Sizes of one recurrence.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    steps: usize,
    hid: usize,
    gh: usize,
    cell: Cell,
    reverse: bool,
    /// Samples per part: the samples of a batch are independent, so each part
    /// runs all its steps on its own thread, with no hand-off between steps.
    part: usize,
}

impl Dims {
    /// The time index of processing step `s`.
    fn time(&self, s: usize) -> usize {
        if self.reverse {
            self.steps - 1 - s
        } else {
            s
        }
    }
    /// Offset of sample `n` at time `t` in a `[N, T, width]` buffer.
    fn at(&self, n: usize, t: usize, width: usize) -> usize {
        (n * self.steps + t) * width
    }
    /// The same recurrence over `batch` samples (one part).
    fn with_batch(self, batch: usize) -> Dims {
        Dims { batch, ..self }
    }
    /// Samples per part, for `threads` threads.
    fn part_size(&self, threads: usize) -> usize {
        let work = self.batch * self.steps * self.gh * self.hid;
        let parts = threads.min(self.batch / PART_MIN);
        if parts < 2 || work < SPLIT_MIN {
            return self.batch.max(1);
        }
        self.batch.div_ceil(parts)
    }
    /// Whether a part's products may split over threads (only when there is one part).
    fn threaded(&self) -> bool {
        self.part >= self.batch
    }
}

/// What the forward pass keeps for backward, by processing step: `[S, N, ·]`
/// for the `N` samples of one part.
struct Saved<T> {
    gates: Vec<T>,
    hw: Vec<T>,
    c: Vec<T>,
    h: Vec<T>,
}

enum SavedAny {
    F32(Vec<Saved<f32>>),
    F64(Vec<Saved<f64>>),
}

/// Runs every part of the batch, in parallel; returns the output `[N, T, H]`
/// and what each part keeps for backward.
fn forward<T: Element>(d: Dims, xw: &[T], w: &[T], b: Option<&[T]>) -> (Vec<T>, Vec<Saved<T>>) {
    let mut out = vec![T::zero(); d.batch * d.steps * d.hid];
    let per_sample = (d.steps * d.gh).max(1);
    let saved = out
        .par_chunks_mut((d.part * d.steps * d.hid).max(1))
        .zip(xw.par_chunks(d.part * per_sample))
        .map(|(out, xw)| forward_part(d.with_batch(xw.len() / per_sample), xw, w, b, out))
        .collect();
    (out, saved)
}

/// The recurrence of one part of the batch (`d.batch` samples), step by step:
/// one GEMM for the hidden products, then the fused gate kernel.
fn forward_part<T: Element>(d: Dims, xw: &[T], w: &[T], b: Option<&[T]>, out: &mut [T]) -> Saved<T> {
    let (nh, ng) = (d.batch * d.hid, d.batch * d.gh);
    let mut sv = Saved {
        gates: vec![T::zero(); d.steps * ng],
        hw: vec![T::zero(); d.steps * ng],
        c: vec![T::zero(); if d.cell == Cell::Lstm { d.steps * nh } else { 0 }],
        h: vec![T::zero(); d.steps * nh],
    };
    let zeros = vec![T::zero(); nh];
    for s in 0..d.steps {
        let t = d.time(s);
        let (h_done, h_rest) = sv.h.split_at_mut(s * nh);
        let h_prev = if s == 0 { &zeros[..] } else { &h_done[(s - 1) * nh..] };
        let hw = &mut sv.hw[s * ng..(s + 1) * ng];
        hidden_product(h_prev, w, b, d.hid, hw, d.threaded());
        let (c_done, c_rest) = sv.c.split_at_mut(sv_len(d, s, nh));
        for n in 0..d.batch {
            let (hr, gr) = (n * d.hid..(n + 1) * d.hid, n * d.gh..(n + 1) * d.gh);
            let c_prev = if s == 0 || d.cell != Cell::Lstm {
                &zeros[hr.clone()]
            } else {
                &c_done[(s - 1) * nh..][hr.clone()]
            };
            let io = StepIo {
                xw: &xw[d.at(n, t, d.gh)..][..d.gh],
                hw: &hw[gr.clone()],
                h_prev: &h_prev[hr.clone()],
                c_prev,
            };
            let mut none: [T; 0] = [];
            let c = if d.cell == Cell::Lstm {
                &mut c_rest[hr.clone()]
            } else {
                &mut none[..]
            };
            cell_forward(d.cell, &io, &mut sv.gates[s * ng..][gr], c, &mut h_rest[hr.clone()]);
            out[d.at(n, t, d.hid)..][..d.hid].copy_from_slice(&h_rest[hr]);
        }
    }
    sv
}

/// Where step `s`'s cell state starts (0 when the cell keeps none).
fn sv_len(d: Dims, s: usize, nh: usize) -> usize {
    if d.cell == Cell::Lstm {
        s * nh
    } else {
        0
    }
}

/// ∂L/∂h of step time `t`: the output's gradient plus what the next step passes back.
fn step_dh<T: Element>(d: Dims, t: usize, g: &[T], dh_next: &[T], dh: &mut [T]) {
    for n in 0..d.batch {
        let out = &g[d.at(n, t, d.hid)..][..d.hid];
        let rows = dh[n * d.hid..(n + 1) * d.hid].iter_mut().zip(&dh_next[n * d.hid..]);
        for ((o, &a), &b) in rows.zip(out) {
            *o = a + b;
        }
    }
}

/// Gradients of the input projection, `W_hh` and `b_hh`.
type Grads<T> = (Vec<T>, Vec<T>, Vec<T>);

/// Backpropagation through time, every part of the batch in parallel; the
/// parts' `W_hh` and `b_hh` gradients are summed. With `norms`, also returns
/// ‖∂L/∂h_t‖ at each time `t` (the parts' squared norms summed, then the root).
fn backward<T: Element>(d: Dims, parts: &[Saved<T>], w: &[T], g: &[T], norms: bool) -> (Grads<T>, Option<Vec<f64>>) {
    let mut dxw = vec![T::zero(); d.batch * d.steps * d.gh];
    let per_sample = (d.steps * d.gh).max(1);
    let add = |a: &mut Vec<T>, b: Vec<T>| a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
    let partial = dxw
        .par_chunks_mut(d.part * per_sample)
        .zip(g.par_chunks((d.part * d.steps * d.hid).max(1)))
        .zip(parts)
        .map(|((dxw, g), sv)| backward_part(d.with_batch(dxw.len() / per_sample), sv, w, g, dxw, norms))
        .reduce_with(|(mut dw, mut db, mut sq), (w2, b2, sq2)| {
            add(&mut dw, w2);
            add(&mut db, b2);
            if let (Some(a), Some(b)) = (sq.as_mut(), sq2) {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            }
            (dw, db, sq)
        });
    let (dw, db, sq) = partial.unwrap_or_else(|| (vec![T::zero(); w.len()], vec![T::zero(); d.gh], None));
    let norms = norms.then(|| sq.map_or_else(|| vec![0.0; d.steps], |v| v.into_iter().map(f64::sqrt).collect()));
    ((dxw, dw, db), norms)
}

/// What one part's backward returns: `(dW_hh, db_hh)` and, when asked, the
/// squared norm of ∂L/∂h_t over the part's samples at each time `t`.
type PartGrads<T> = (Vec<T>, Vec<T>, Option<Vec<f64>>);

/// Backward of one part: the fused gate kernel and one GEMM for ∂L/∂h_{t-1}
/// per step; the gradients of `W_hh` and `b_hh` after the loop, one GEMM over
/// all steps. Writes `dxw` and returns the part's `(dW_hh, db_hh)`.
fn backward_part<T: Element>(d: Dims, sv: &Saved<T>, w: &[T], g: &[T], dxw: &mut [T], norms: bool) -> PartGrads<T> {
    let (nh, ng) = (d.batch * d.hid, d.batch * d.gh);
    let mut dhw = vec![T::zero(); d.steps * ng];
    let (mut dh_next, mut dc_next) = (vec![T::zero(); nh], vec![T::zero(); nh]);
    let (mut dh, mut dc_prev, mut direct) = (vec![T::zero(); nh], vec![T::zero(); nh], vec![T::zero(); nh]);
    let zeros = vec![T::zero(); nh];
    let lstm = d.cell == Cell::Lstm;
    let mut sq = norms.then(|| vec![0.0; d.steps]);
    for s in (0..d.steps).rev() {
        let t = d.time(s);
        step_dh(d, t, g, &dh_next, &mut dh);
        if let Some(sq) = sq.as_mut() {
            sq[t] = sq_norm_f64(&dh);
        }
        let h_prev = if s == 0 {
            &zeros[..]
        } else {
            &sv.h[(s - 1) * nh..s * nh]
        };
        for n in 0..d.batch {
            let (hr, gr) = (n * d.hid..(n + 1) * d.hid, n * d.gh..(n + 1) * d.gh);
            let c_prev = if s == 0 || !lstm {
                &zeros[hr.clone()]
            } else {
                &sv.c[(s - 1) * nh..][hr.clone()]
            };
            let step = StepGrad {
                gates: &sv.gates[s * ng..][gr.clone()],
                hw: &sv.hw[s * ng..][gr.clone()],
                c: if lstm {
                    &sv.c[s * nh..][hr.clone()]
                } else {
                    &zeros[hr.clone()]
                },
                c_prev,
                h_prev: &h_prev[hr.clone()],
                dh: &dh[hr.clone()],
                dc: &dc_next[hr.clone()],
            };
            let dx = &mut dxw[d.at(n, t, d.gh)..][..d.gh];
            let dhw = &mut dhw[s * ng..][gr];
            cell_backward(d.cell, &step, dx, dhw, &mut dc_prev[hr.clone()], &mut direct[hr]);
        }
        std::mem::swap(&mut dc_next, &mut dc_prev);
        if s > 0 {
            dh_next.copy_from_slice(&direct);
            hidden_product_dh(&dhw[s * ng..(s + 1) * ng], w, d.hid, &mut dh_next, d.threaded());
        }
    }
    let (dw, db) = hidden_weight_grads(d, sv, w.len(), &dhw);
    (dw, db, sq)
}

/// `dW_hh` and `db_hh` of one part from the gate gradients `dhw` of all its
/// steps: one GEMM over all steps, after the loop.
fn hidden_weight_grads<T: Element>(d: Dims, sv: &Saved<T>, w_len: usize, dhw: &[T]) -> (Vec<T>, Vec<T>) {
    let (nh, ng) = (d.batch * d.hid, d.batch * d.gh);
    let mut dw = vec![T::zero(); w_len];
    // Step 0's previous state is zero: it adds nothing to dW_hh.
    let later = ng.min(dhw.len());
    hidden_product_dw(
        &dhw[later..],
        &sv.h[..sv.h.len().saturating_sub(nh)],
        d.hid,
        &mut dw,
        d.threaded(),
    );
    let mut db = vec![T::zero(); d.gh];
    bias_grad(dhw, &mut db);
    (dw, db)
}

struct RecurrenceBackward {
    xw: Tensor,
    w_hh: Tensor,
    b_hh: Option<Tensor>,
    dims: Dims,
    saved: SavedAny,
    hidden_grad_norms: Option<HiddenGradNorms>,
}

impl GradFn for RecurrenceBackward {
    fn name(&self) -> &'static str {
        "recurrence"
    }
    fn inputs(&self) -> Vec<Tensor> {
        let mut v = vec![self.xw.clone(), self.w_hh.clone()];
        v.extend(self.b_hh.clone());
        v
    }
    fn backward(&self, _out: &Tensor, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (ws, gs) = (self.w_hh.contiguous_storage(), g.contiguous_storage());
        let want = self.hidden_grad_norms.is_some();
        let ((dxw, dw, db), norms) = match (&self.saved, &ws, &gs) {
            (SavedAny::F32(sv), CpuStorage::F32(w), CpuStorage::F32(g)) => {
                let ((a, b, c), n) = backward(self.dims, sv, w, g, want);
                ((CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)), n)
            }
            (SavedAny::F64(sv), CpuStorage::F64(w), CpuStorage::F64(g)) => {
                let ((a, b, c), n) = backward(self.dims, sv, w, g, want);
                ((CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)), n)
            }
            _ => unreachable!("gradient has the input's dtype"),
        };
        if let (Some(slot), Some(norms)) = (&self.hidden_grad_norms, norms) {
            slot.set(norms);
        }
        let mut v = vec![
            Some(Tensor::from_storage(dxw, self.xw.shape())),
            Some(Tensor::from_storage(dw, self.w_hh.shape())),
        ];
        if self.b_hh.is_some() {
            v.push(Some(Tensor::from_storage(db, &[self.dims.gh])));
        }
        Ok(v)
    }
}

fn check_shapes(xw: &Tensor, w_hh: &Tensor, b_hh: Option<&Tensor>, cell: Cell) -> Result<Dims> {
    let (&[batch, steps, gh], &[wr, hid]) = (xw.shape(), w_hh.shape()) else {
        return arg_err(
            "recurrence",
            format!(
                "expects xw [N, T, G·H] and w_hh [G·H, H], got {:?} and {:?}",
                xw.shape(),
                w_hh.shape()
            ),
        );
    };
    if gh != wr || gh != cell.gates() * hid || b_hh.is_some_and(|b| b.shape() != [gh]) {
        return arg_err(
            "recurrence",
            format!(
                "{cell:?} needs xw [N, T, {}·H], w_hh [{0}·H, H], b_hh [{0}·H]; got {:?}, {:?}",
                cell.gates(),
                xw.shape(),
                w_hh.shape()
            ),
        );
    }
    xw.same_dtype("recurrence", w_hh)?;
    if let Some(b) = b_hh {
        xw.same_dtype("recurrence", b)?;
    }
    Ok(Dims {
        batch,
        steps,
        hid,
        gh,
        cell,
        reverse: false,
        part: batch,
    })
}

impl Tensor {
    /// Runs `cell` over a sequence: `xw` `[N, T, G·H]` is the input projection
    /// `x W_ihᵀ + b_ih` of every step, `w_hh` `[G·H, H]` and `b_hh` `[G·H]` the
    /// hidden-to-hidden weights (PyTorch's gate order). The initial state is
    /// zero; `reverse` runs from the last step to the first. Returns the hidden
    /// state of every step, `[N, T, H]` (in time order).
    pub fn recurrence(&self, w_hh: &Tensor, b_hh: Option<&Tensor>, cell: Cell, reverse: bool) -> Result<Tensor> {
        self.recurrence_observed(w_hh, b_hh, cell, reverse, None)
    }

    /// [`Tensor::recurrence`] whose backward pass also leaves ‖∂L/∂h_t‖ of
    /// every step in `hidden_grad_norms` (for the diagnostics through time).
    pub fn recurrence_observed(
        &self,
        w_hh: &Tensor,
        b_hh: Option<&Tensor>,
        cell: Cell,
        reverse: bool,
        hidden_grad_norms: Option<&HiddenGradNorms>,
    ) -> Result<Tensor> {
        let dims = Dims {
            reverse,
            ..check_shapes(self, w_hh, b_hh, cell)?
        };
        let dims = Dims {
            part: dims.part_size(rayon::current_num_threads()),
            ..dims
        };
        let (xs, ws) = (self.contiguous_storage(), w_hh.contiguous_storage());
        let bs = b_hh.map(Tensor::contiguous_storage);
        let (out, saved) = match (&xs, &ws, &bs) {
            (CpuStorage::F32(x), CpuStorage::F32(w), b) => {
                let (o, s) = forward(dims, x, w, b.as_ref().and_then(|b| f32::slice(b)));
                (CpuStorage::F32(o), SavedAny::F32(s))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), b) => {
                let (o, s) = forward(dims, x, w, b.as_ref().and_then(|b| f64::slice(b)));
                (CpuStorage::F64(o), SavedAny::F64(s))
            }
            _ => unreachable!("dtypes checked"),
        };
        let mut inputs = vec![self, w_hh];
        inputs.extend(b_hh);
        Ok(
            Tensor::from_storage(out, &[dims.batch, dims.steps, dims.hid]).attach(&inputs, || {
                node(RecurrenceBackward {
                    xw: self.clone(),
                    w_hh: w_hh.clone(),
                    b_hh: b_hh.cloned(),
                    dims,
                    saved,
                    hidden_grad_norms: hidden_grad_norms.cloned(),
                })
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{backward, forward, Cell, Dims, HiddenGradNorms};
    use crate::testutil::{check, rand64};
    use crate::Tensor;

    const CELLS: [Cell; 4] = [Cell::RnnTanh, Cell::RnnRelu, Cell::Lstm, Cell::Gru];

    /// One step of `cell` composed from generic ops: the plain version the fused kernels must match.
    fn composed_step(cell: Cell, xw: &Tensor, hw: &Tensor, h: &Tensor, c: &Tensor) -> (Tensor, Tensor) {
        let hid = h.shape()[1];
        let part = |t: &Tensor, q: usize| t.narrow(1, q * hid, hid).unwrap();
        let pre = |q: usize| part(xw, q).add(&part(hw, q)).unwrap();
        match cell {
            Cell::RnnTanh => (pre(0).tanh(), c.clone()),
            Cell::RnnRelu => (pre(0).relu(), c.clone()),
            Cell::Lstm => {
                let (i, f, g, o) = (pre(0).sigmoid(), pre(1).sigmoid(), pre(2).tanh(), pre(3).sigmoid());
                let c2 = f.mul(c).unwrap().add(&i.mul(&g).unwrap()).unwrap();
                (o.mul(&c2.tanh()).unwrap(), c2)
            }
            Cell::Gru => {
                let (r, z) = (pre(0).sigmoid(), pre(1).sigmoid());
                let n = part(xw, 2).add(&r.mul(&part(hw, 2)).unwrap()).unwrap().tanh();
                let one_minus_z = z.neg().add_scalar(1.0);
                (one_minus_z.mul(&n).unwrap().add(&z.mul(h).unwrap()).unwrap(), c.clone())
            }
        }
    }

    /// The whole recurrence composed from generic ops, in time order.
    fn composed(cell: Cell, xw: &Tensor, w: &Tensor, b: Option<&Tensor>, reverse: bool) -> Tensor {
        let outs = composed_states(cell, xw, w, b, reverse);
        Tensor::stack(&outs.iter().collect::<Vec<_>>(), 1).unwrap()
    }

    /// Each step's hidden state `[N, H]` of the composed recurrence, in time order.
    fn composed_states(cell: Cell, xw: &Tensor, w: &Tensor, b: Option<&Tensor>, reverse: bool) -> Vec<Tensor> {
        let (n, t, hid) = (xw.shape()[0], xw.shape()[1], w.shape()[1]);
        let mut h = Tensor::zeros(&[n, hid], xw.dtype());
        let mut c = h.clone();
        let mut outs = vec![None; t];
        for s in 0..t {
            let tt = if reverse { t - 1 - s } else { s };
            let hw = h.linear(w, b).unwrap();
            let x = xw.narrow(1, tt, 1).unwrap().squeeze(1).unwrap();
            (h, c) = composed_step(cell, &x, &hw, &h, &c);
            outs[tt] = Some(h.clone());
        }
        outs.into_iter().map(Option::unwrap).collect()
    }

    #[test]
    fn matches_the_composed_cells_forward_and_backward() {
        for cell in CELLS {
            for reverse in [false, true] {
                let hid = 3;
                let xw = rand64(&[2, 4, cell.gates() * hid], 1).requires_grad_(true);
                let w = rand64(&[cell.gates() * hid, hid], 2)
                    .mul_scalar(0.5)
                    .requires_grad_(true);
                let b = rand64(&[cell.gates() * hid], 3).requires_grad_(true);
                let fused = xw.recurrence(&w, Some(&b), cell, reverse).unwrap();
                let plain = composed(cell, &xw, &w, Some(&b), reverse);
                let (fv, pv) = (fused.to_vec_f64(), plain.to_vec_f64());
                for (a, p) in fv.iter().zip(&pv) {
                    assert!((a - p).abs() < 1e-12, "{cell:?} {reverse}: {a} vs {p}");
                }
                let weights = rand64(fused.shape(), 4);
                let gf = fused.mul(&weights).unwrap().sum_all().backward().unwrap();
                let gp = plain.mul(&weights).unwrap().sum_all().backward().unwrap();
                for t in [&xw, &w, &b] {
                    let (a, p) = (gf.get(t).unwrap().to_vec_f64(), gp.get(t).unwrap().to_vec_f64());
                    for (a, p) in a.iter().zip(&p) {
                        assert!((a - p).abs() < 1e-10, "{cell:?} {reverse}: grad {a} vs {p}");
                    }
                }
            }
        }
    }

    #[test]
    fn parts_of_the_batch_give_the_unsplit_result() {
        for cell in CELLS {
            let (batch, steps, hid) = (7, 4, 3);
            let gh = cell.gates() * hid;
            let xw = rand64(&[batch, steps, gh], 1).to_vec_f64();
            let w = rand64(&[gh, hid], 2).mul_scalar(0.5).to_vec_f64();
            let b = rand64(&[gh], 3).to_vec_f64();
            let g = rand64(&[batch, steps, hid], 4).to_vec_f64();
            let run = |part: usize| {
                let d = Dims {
                    batch,
                    steps,
                    hid,
                    gh,
                    cell,
                    reverse: true,
                    part,
                };
                let (out, saved) = forward(d, &xw, &w, Some(&b));
                assert_eq!(saved.len(), batch.div_ceil(part));
                let ((dxw, dw, db), norms) = backward(d, &saved, &w, &g, true);
                let ((unobserved, _, _), none) = backward(d, &saved, &w, &g, false);
                assert!(none.is_none() && unobserved == dxw, "observing changes nothing");
                [out, dxw, dw, db, norms.unwrap()]
            };
            let whole = run(batch);
            for part in [1, 3] {
                for (a, p) in run(part).iter().zip(&whole) {
                    for (a, p) in a.iter().zip(p) {
                        assert!((a - p).abs() < 1e-12, "{cell:?} part {part}: {a} vs {p}");
                    }
                }
            }
        }
    }

    #[test]
    fn large_batches_are_split_small_ones_are_not() {
        let d = |batch: usize, steps: usize| Dims {
            batch,
            steps,
            hid: 128,
            gh: 512,
            cell: Cell::Lstm,
            reverse: false,
            part: batch,
        };
        assert_eq!(d(64, 28).part_size(2), 32);
        assert_eq!(d(64, 28).part_size(1), 64);
        assert_eq!(d(16, 1).part_size(2), 16);
        assert_eq!(d(12, 28).part_size(4), 12);
        assert_eq!(d(0, 28).part_size(2), 1);
    }

    #[test]
    fn records_the_total_gradient_reaching_each_hidden_state() {
        for cell in CELLS {
            for reverse in [false, true] {
                let hid = 3;
                let xw = rand64(&[2, 5, cell.gates() * hid], 8).requires_grad_(true);
                let w = rand64(&[cell.gates() * hid, hid], 9).mul_scalar(0.5);
                let b = rand64(&[cell.gates() * hid], 10);
                let norms = HiddenGradNorms::default();
                let fused = xw
                    .recurrence_observed(&w, Some(&b), cell, reverse, Some(&norms))
                    .unwrap();
                assert!(norms.get().is_none(), "filled by backward, not forward");
                // A loss that reads every step, so each h_t gets its own output gradient plus the recurrent one.
                let weights = rand64(fused.shape(), 11);
                fused.mul(&weights).unwrap().sum_all().backward().unwrap();
                let states = composed_states(cell, &xw, &w, Some(&b), reverse);
                let plain = Tensor::stack(&states.iter().collect::<Vec<_>>(), 1).unwrap();
                let grads = plain.mul(&weights).unwrap().sum_all().backward_retain_all().unwrap();
                let recorded = norms.get().unwrap();
                assert_eq!(recorded.len(), 5);
                for (t, h) in states.iter().enumerate() {
                    let g = grads.get(h).unwrap().to_vec_f64();
                    let expected = g.iter().map(|v| v * v).sum::<f64>().sqrt();
                    let got = recorded[t];
                    assert!(
                        (got - expected).abs() < 1e-10,
                        "{cell:?} {reverse} t={t}: {got} vs {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn gradchecks_every_cell_both_directions() {
        for cell in CELLS {
            for reverse in [false, true] {
                let hid = 2;
                let xw = rand64(&[2, 3, cell.gates() * hid], 5);
                let w = rand64(&[cell.gates() * hid, hid], 6).mul_scalar(0.5);
                let b = rand64(&[cell.gates() * hid], 7).add_scalar(0.1);
                check(
                    |v| v[0].recurrence(&v[1], Some(&v[2]), cell, reverse),
                    &[xw.clone(), w.clone(), b],
                );
                check(|v| v[0].recurrence(&v[1], None, cell, reverse), &[xw, w]);
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let xw = rand64(&[2, 3, 8], 1);
        assert!(xw.recurrence(&rand64(&[8, 2], 2), None, Cell::Lstm, false).is_ok());
        assert!(xw.recurrence(&rand64(&[8, 2], 2), None, Cell::Gru, false).is_err());
        assert!(xw.recurrence(&rand64(&[8, 3], 2), None, Cell::Lstm, false).is_err());
        assert!(xw
            .recurrence(&rand64(&[8, 2], 2), Some(&rand64(&[7], 3)), Cell::Lstm, false)
            .is_err());
    }
}
