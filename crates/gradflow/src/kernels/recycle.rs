//! Large buffers kept between training steps for reuse.
//!
//! glibc serves allocations of a few megabytes with fresh mappings and unmaps them
//! when they are freed, so a buffer of that size allocated and freed every step costs
//! page faults on every first touch and TLB shootdowns on every free (measured: the
//! LeNet-5 step with its 9 MB of kept convolution columns took 6.1 ms this way, most
//! of it in the kernel). Buffers handed back here are reused by the next request
//! they fit.

use crate::Element;
use std::any::Any;
use std::sync::{Mutex, PoisonError};

/// At most this many buffers per element type are kept…
const KEEP: usize = 4;
/// …holding at most this many bytes in all.
const KEEP_BYTES: usize = 256 << 20;

fn pool<T: Element>() -> &'static Mutex<Vec<Vec<T>>> {
    static F32: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
    static F64: Mutex<Vec<Vec<f64>>> = Mutex::new(Vec::new());
    let pools: [&'static dyn Any; 2] = [&F32, &F64];
    pools
        .into_iter()
        .find_map(|p| p.downcast_ref::<Mutex<Vec<Vec<T>>>>())
        .expect("elements are f32 or f64")
}

/// An empty buffer with room for `len` elements: the smallest kept one that fits,
/// else a new one.
pub(crate) fn take<T: Element>(len: usize) -> Vec<T> {
    if len == 0 {
        return Vec::new();
    }
    let mut kept = pool::<T>().lock().unwrap_or_else(PoisonError::into_inner);
    let best = (0..kept.len())
        .filter(|&i| kept[i].capacity() >= len)
        .min_by_key(|&i| kept[i].capacity());
    match best {
        Some(i) => {
            let mut v = kept.swap_remove(i);
            v.clear();
            v
        }
        None => Vec::with_capacity(len),
    }
}

/// Keep `v` for a later [`take`]; beyond the limits the oldest kept buffers are freed.
pub(crate) fn give<T: Element>(v: Vec<T>) {
    let bytes = |v: &Vec<T>| v.capacity() * std::mem::size_of::<T>();
    if bytes(&v) == 0 || bytes(&v) > KEEP_BYTES {
        return;
    }
    let mut kept = pool::<T>().lock().unwrap_or_else(PoisonError::into_inner);
    kept.push(v);
    while kept.len() > KEEP || kept.iter().map(bytes).sum::<usize>() > KEEP_BYTES {
        kept.remove(0);
    }
}

#[cfg(test)]
mod tests {
    use super::{give, take, KEEP};

    #[test]
    fn a_given_buffer_is_taken_again_when_it_fits() {
        // f64 buffers of a size no other test asks for.
        let v: Vec<f64> = Vec::with_capacity(123_457);
        let ptr = v.as_ptr();
        give(v);
        let small = take::<f64>(1000);
        assert_eq!(small.as_ptr(), ptr, "the kept buffer serves a smaller request");
        assert!(small.is_empty() && small.capacity() >= 123_457);
        give(small);
        let big = take::<f64>(200_000);
        assert_ne!(big.as_ptr(), ptr, "too small a buffer is not handed out");
        assert!(big.capacity() >= 200_000);
        // Never more than KEEP buffers kept: the oldest go first.
        for _ in 0..KEEP + 2 {
            give(Vec::<f64>::with_capacity(10));
        }
        let kept = super::pool::<f64>().lock().unwrap().len();
        assert!(kept <= KEEP, "{kept} buffers kept");
    }
}
