//! The loops behind the recurrent op: the hidden-to-hidden product of one
//! step and the fused gate kernels of RNN, LSTM and GRU cells, forward and
//! backward. One call handles every gate of every sample of one time step.
//!
//! Gate rows follow PyTorch: LSTM `i, f, g, o`; GRU `r, z, n` with `b_hn`
//! inside the reset product, `n = tanh(x_n + r ⊙ (W_hn h + b_hn))`.

use crate::Element;
use rayon::prelude::*;

/// Below this many multiply-adds a step's product stays on one thread.
const PAR_MIN: usize = 1 << 16;

/// Which cell the recurrence runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// `h = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)`.
    RnnTanh,
    /// `h = relu(...)`.
    RnnRelu,
    /// Long short-term memory, gates i, f, g, o.
    Lstm,
    /// Gated recurrent unit, gates r, z, n.
    Gru,
}

impl Cell {
    /// Gate blocks per hidden unit (the rows of `W_hh` are `gates · H`).
    pub fn gates(self) -> usize {
        match self {
            Cell::RnnTanh | Cell::RnnRelu => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
}

fn sigmoid<T: Element>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

/// `out[n, j] = b[j] + Σ_k h[n, k] · w[j, k]` for `h: [N, H]`, `w: [G, H]`.
pub fn hidden_product<T: Element>(h: &[T], w: &[T], b: Option<&[T]>, hid: usize, out: &mut [T]) {
    let g = w.len() / hid.max(1);
    let row = |(n, o): (usize, &mut [T])| {
        let hn = &h[n * hid..(n + 1) * hid];
        for (j, oj) in o.iter_mut().enumerate() {
            let wj = &w[j * hid..(j + 1) * hid];
            let dot = hn.iter().zip(wj).fold(T::zero(), |a, (&x, &y)| a + x * y);
            *oj = dot + b.map_or(T::zero(), |b| b[j]);
        }
    };
    if h.len() * g >= PAR_MIN {
        out.par_chunks_mut(g).enumerate().for_each(row);
    } else {
        out.chunks_mut(g).enumerate().for_each(row);
    }
}

/// Backward of [`hidden_product`]: `dh[n, k] += Σ_j dg[n, j] · w[j, k]`.
pub fn hidden_product_dh<T: Element>(dg: &[T], w: &[T], hid: usize, dh: &mut [T]) {
    let g = w.len() / hid.max(1);
    let row = |(n, d): (usize, &mut [T])| {
        for (j, &gj) in dg[n * g..(n + 1) * g].iter().enumerate() {
            if gj != T::zero() {
                for (dk, &wk) in d.iter_mut().zip(&w[j * hid..(j + 1) * hid]) {
                    *dk += gj * wk;
                }
            }
        }
    };
    if dh.len() * g >= PAR_MIN {
        dh.par_chunks_mut(hid).enumerate().for_each(row);
    } else {
        dh.chunks_mut(hid).enumerate().for_each(row);
    }
}

/// `dw[j, k] += Σ_n dg[n, j] · h[n, k]` and `db[j] += Σ_n dg[n, j]`.
pub fn hidden_product_dw<T: Element>(dg: &[T], h: &[T], hid: usize, dw: &mut [T], db: Option<&mut [T]>) {
    let g = dw.len() / hid.max(1);
    let batch = h.len() / hid.max(1);
    let row = |(j, d): (usize, &mut [T])| {
        for n in 0..batch {
            let gj = dg[n * g + j];
            if gj != T::zero() {
                for (dk, &hk) in d.iter_mut().zip(&h[n * hid..(n + 1) * hid]) {
                    *dk += gj * hk;
                }
            }
        }
    };
    if dw.len() * batch >= PAR_MIN {
        dw.par_chunks_mut(hid).enumerate().for_each(row);
    } else {
        dw.chunks_mut(hid).enumerate().for_each(row);
    }
    if let Some(db) = db {
        for n in 0..batch {
            for (b, &v) in db.iter_mut().zip(&dg[n * g..(n + 1) * g]) {
                *b += v;
            }
        }
    }
}

/// One step's state for one sample, as slices of the saved buffers.
pub struct StepIo<'a, T> {
    /// The input projection `x W_ihᵀ + b_ih`, `[G·H]`.
    pub xw: &'a [T],
    /// The hidden projection `h W_hhᵀ + b_hh`, `[G·H]`.
    pub hw: &'a [T],
    /// The previous hidden state, `[H]`.
    pub h_prev: &'a [T],
    /// The previous cell state (LSTM), `[H]`.
    pub c_prev: &'a [T],
}

/// Forward of one cell for one sample: writes the activated gates `[G·H]`
/// (for RNN the new h), the new cell state (LSTM) and the new hidden state.
pub fn cell_forward<T: Element>(cell: Cell, io: &StepIo<T>, gates: &mut [T], c: &mut [T], h: &mut [T]) {
    let hid = h.len();
    match cell {
        Cell::RnnTanh | Cell::RnnRelu => {
            for k in 0..hid {
                let a = io.xw[k] + io.hw[k];
                h[k] = if cell == Cell::RnnTanh {
                    a.tanh()
                } else {
                    a.max(T::zero())
                };
                gates[k] = h[k];
            }
        }
        Cell::Lstm => {
            for k in 0..hid {
                let pre = |q: usize| io.xw[q * hid + k] + io.hw[q * hid + k];
                let (i, f, g, o) = (sigmoid(pre(0)), sigmoid(pre(1)), pre(2).tanh(), sigmoid(pre(3)));
                c[k] = f * io.c_prev[k] + i * g;
                h[k] = o * c[k].tanh();
                (gates[k], gates[hid + k], gates[2 * hid + k], gates[3 * hid + k]) = (i, f, g, o);
            }
        }
        Cell::Gru => {
            for k in 0..hid {
                let r = sigmoid(io.xw[k] + io.hw[k]);
                let z = sigmoid(io.xw[hid + k] + io.hw[hid + k]);
                let n = (io.xw[2 * hid + k] + r * io.hw[2 * hid + k]).tanh();
                h[k] = (T::one() - z) * n + z * io.h_prev[k];
                (gates[k], gates[hid + k], gates[2 * hid + k]) = (r, z, n);
            }
        }
    }
}

/// What one cell's backward reads for one sample.
pub struct StepGrad<'a, T> {
    /// The activated gates saved by [`cell_forward`].
    pub gates: &'a [T],
    /// The hidden projection (GRU needs `W_hn h + b_hn`).
    pub hw: &'a [T],
    /// The new cell state (LSTM).
    pub c: &'a [T],
    /// The previous cell state (LSTM).
    pub c_prev: &'a [T],
    /// The previous hidden state (GRU).
    pub h_prev: &'a [T],
    /// ∂L/∂h of this step (from the output and from the next step).
    pub dh: &'a [T],
    /// ∂L/∂c from the next step (LSTM).
    pub dc: &'a [T],
}

/// Backward of one cell for one sample, fused over its gates: writes ∂L/∂ of
/// the input projection (`dxw`) and of the hidden projection (`dhw`), both
/// `[G·H]`, ∂L/∂c_prev (LSTM) and the direct part of ∂L/∂h_prev (GRU's z·dh;
/// zero otherwise).
pub fn cell_backward<T: Element>(
    cell: Cell,
    s: &StepGrad<T>,
    dxw: &mut [T],
    dhw: &mut [T],
    dc_prev: &mut [T],
    dh_direct: &mut [T],
) {
    let hid = s.dh.len();
    let one = T::one();
    match cell {
        Cell::RnnTanh | Cell::RnnRelu => {
            for k in 0..hid {
                let h = s.gates[k];
                let d = if cell == Cell::RnnTanh {
                    one - h * h
                } else {
                    if h > T::zero() {
                        one
                    } else {
                        T::zero()
                    }
                };
                dxw[k] = s.dh[k] * d;
                dhw[k] = dxw[k];
            }
        }
        Cell::Lstm => {
            for k in 0..hid {
                let (i, f, g, o) = (s.gates[k], s.gates[hid + k], s.gates[2 * hid + k], s.gates[3 * hid + k]);
                let tc = s.c[k].tanh();
                let dc = s.dc[k] + s.dh[k] * o * (one - tc * tc);
                let d = [
                    dc * g * i * (one - i),
                    dc * s.c_prev[k] * f * (one - f),
                    dc * i * (one - g * g),
                    s.dh[k] * tc * o * (one - o),
                ];
                for q in 0..4 {
                    dxw[q * hid + k] = d[q];
                    dhw[q * hid + k] = d[q];
                }
                dc_prev[k] = dc * f;
            }
        }
        Cell::Gru => {
            for k in 0..hid {
                let (r, z, n) = (s.gates[k], s.gates[hid + k], s.gates[2 * hid + k]);
                let dn = s.dh[k] * (one - z) * (one - n * n);
                let dr = dn * s.hw[2 * hid + k] * r * (one - r);
                let dz = s.dh[k] * (s.h_prev[k] - n) * z * (one - z);
                (dxw[k], dxw[hid + k], dxw[2 * hid + k]) = (dr, dz, dn);
                (dhw[k], dhw[hid + k], dhw[2 * hid + k]) = (dr, dz, dn * r);
                dh_direct[k] = s.dh[k] * z;
            }
        }
    }
}
