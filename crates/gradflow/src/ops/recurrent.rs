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
use crate::kernels::recurrent::{cell_backward, cell_forward, hidden_product, hidden_product_dh, hidden_product_dw};
use crate::kernels::recurrent::{StepGrad, StepIo};
use crate::storage::CpuStorage;
use crate::{Element, Tensor};
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

/// The Frobenius norm of `v` in f64.
fn norm_f64<T: Element>(v: &[T]) -> f64 {
    v.iter()
        .map(|x| x.to_f64().unwrap_or(f64::NAN).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Sizes of one recurrence.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    steps: usize,
    hid: usize,
    gh: usize,
    cell: Cell,
    reverse: bool,
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
}

/// What the forward pass keeps for backward, by processing step: `[S, N, ·]`.
struct Saved<T> {
    gates: Vec<T>,
    hw: Vec<T>,
    c: Vec<T>,
    h: Vec<T>,
}

enum SavedAny {
    F32(Saved<f32>),
    F64(Saved<f64>),
}

fn forward<T: Element>(d: Dims, xw: &[T], w: &[T], b: Option<&[T]>) -> (Vec<T>, Saved<T>) {
    let (nh, ng) = (d.batch * d.hid, d.batch * d.gh);
    let mut sv = Saved {
        gates: vec![T::zero(); d.steps * ng],
        hw: vec![T::zero(); d.steps * ng],
        c: vec![T::zero(); if d.cell == Cell::Lstm { d.steps * nh } else { 0 }],
        h: vec![T::zero(); d.steps * nh],
    };
    let mut out = vec![T::zero(); d.batch * d.steps * d.hid];
    let zeros = vec![T::zero(); nh];
    for s in 0..d.steps {
        let t = d.time(s);
        let (h_done, h_rest) = sv.h.split_at_mut(s * nh);
        let h_prev = if s == 0 { &zeros[..] } else { &h_done[(s - 1) * nh..] };
        let hw = &mut sv.hw[s * ng..(s + 1) * ng];
        hidden_product(h_prev, w, b, d.hid, hw);
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
    (out, sv)
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

/// `norms`, when given, receives ‖∂L/∂h_t‖ at each time `t`.
fn backward<T: Element>(d: Dims, sv: &Saved<T>, w: &[T], g: &[T], mut norms: Option<&mut [f64]>) -> Grads<T> {
    let (nh, ng) = (d.batch * d.hid, d.batch * d.gh);
    let mut dxw = vec![T::zero(); d.batch * d.steps * d.gh];
    let (mut dw, mut db) = (vec![T::zero(); w.len()], vec![T::zero(); d.gh]);
    let (mut dh_next, mut dc_next) = (vec![T::zero(); nh], vec![T::zero(); nh]);
    let (mut dh, mut dhw, mut dc_prev, mut direct) = (
        vec![T::zero(); nh],
        vec![T::zero(); ng],
        vec![T::zero(); nh],
        vec![T::zero(); nh],
    );
    let zeros = vec![T::zero(); nh];
    for s in (0..d.steps).rev() {
        let t = d.time(s);
        step_dh(d, t, g, &dh_next, &mut dh);
        norms.iter_mut().for_each(|n| n[t] = norm_f64(&dh));
        let h_prev = if s == 0 {
            &zeros[..]
        } else {
            &sv.h[(s - 1) * nh..s * nh]
        };
        let lstm = d.cell == Cell::Lstm;
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
            cell_backward(
                d.cell,
                &step,
                dx,
                &mut dhw[gr],
                &mut dc_prev[hr.clone()],
                &mut direct[hr],
            );
        }
        std::mem::swap(&mut dc_next, &mut dc_prev);
        dh_next.copy_from_slice(&direct);
        hidden_product_dh(&dhw, w, d.hid, &mut dh_next);
        hidden_product_dw(&dhw, h_prev, d.hid, &mut dw, Some(&mut db));
    }
    (dxw, dw, db)
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
        let mut norms = self.hidden_grad_norms.as_ref().map(|_| vec![0.0; self.dims.steps]);
        let (dxw, dw, db) = match (&self.saved, &ws, &gs) {
            (SavedAny::F32(sv), CpuStorage::F32(w), CpuStorage::F32(g)) => {
                let (a, b, c) = backward(self.dims, sv, w, g, norms.as_deref_mut());
                (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c))
            }
            (SavedAny::F64(sv), CpuStorage::F64(w), CpuStorage::F64(g)) => {
                let (a, b, c) = backward(self.dims, sv, w, g, norms.as_deref_mut());
                (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c))
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
    use super::{Cell, HiddenGradNorms};
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
