//! CPU kernels: the loops behind the ops. Contiguous inputs take flat fast
//! paths; large ones are split over rayon's threads, small ones stay on one
//! thread where spawning would cost more than it saves.

pub mod approx;
pub mod attention;
pub(crate) mod conv_windows;
pub mod elementwise;
pub mod gemm;
pub(crate) mod im2col;
pub mod layer_norm;
pub(crate) mod linear;
pub mod recurrent;
pub(crate) mod recycle;
pub mod reduce;
pub mod simd;
pub(crate) mod small_gemm;
pub(crate) mod transpose;
pub(crate) mod weight_grad;

/// Below this many elements an elementwise kernel runs on the calling thread.
pub const PAR_THRESHOLD: usize = 1 << 15;
/// Elements per parallel task.
pub const PAR_CHUNK: usize = 1 << 13;

/// Use `n` threads for all of gradflow's kernels (and the matrix products).
/// Call once, before the first op; later calls are ignored.
pub fn set_num_threads(n: usize) -> bool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .build_global()
        .is_ok()
}

/// Use `n` threads for gradflow's kernels, the calling thread being one of them.
/// A program whose ops all run on one long-lived thread (a command-line tool's main
/// thread) should call this instead of [`set_num_threads`]: the calling thread then
/// splits work in place rather than handing every parallel kernel to a pool thread and
/// sleeping until it is done, a round trip through the scheduler that measured 10% of
/// a small network's training step. The thread must outlive every later op. It
/// takes other threads' work only while it waits inside a kernel, so with `n = 1`
/// (no other pool thread) an op called from any other thread never runs: a program
/// that runs ops on several threads should call [`set_num_threads`] instead. Call
/// once, before the first op; later calls are ignored (and return false).
pub fn set_num_threads_on_this_thread(n: usize) -> bool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .use_current_thread()
        .build_global()
        .is_ok()
}

/// While the returned guard lives, the kernel pool's other threads wait for work by
/// polling for it instead of sleeping, as OpenMP's active wait policy (PyTorch's
/// default) has its threads do. A sleeping thread must be woken by a system call for
/// each parallel kernel and takes microseconds to start, which a training step of
/// small kernels pays hundreds of times: measured with `--step-profile` on 2 Zen 5
/// cores, alternating runs, 784-128-10 at batch 64 0.150–0.177 → 0.116–0.120 ms,
/// LeNet-5 1.46–1.57 → 1.26–1.31 ms, the vit preset 6.9–7.5 → 6.1–6.7 ms.
///
/// The cost is a core kept busy while the guard lives, so a training loop holds one
/// for its epochs only. A thread that finds no work for a while yields its core to
/// the operating system between polls, so other processes still get it. It applies
/// only when called from a thread of the pool (after [`set_num_threads_on_this_thread`],
/// as the `gradflow` command does); otherwise, with one thread, or with
/// `GRADFLOW_WAIT_POLICY=passive` in the environment, the guard does nothing. A
/// program that trains several models at once on the pool's own threads should not
/// hold one: a polling thread finishes the poll before it returns to the work it
/// was waiting in.
pub fn keep_threads_awake() -> AwakeThreads {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let passive = std::env::var("GRADFLOW_WAIT_POLICY").is_ok_and(|p| p.eq_ignore_ascii_case("passive"));
    if let (Some(caller), false, true) = (rayon::current_thread_index(), passive, rayon::current_num_threads() > 1) {
        let flag = stop.clone();
        rayon::spawn_broadcast(move |ctx| {
            if ctx.index() == caller {
                return;
            }
            let mut idle = 0u32;
            while !flag.load(Ordering::Relaxed) {
                match rayon::yield_now() {
                    Some(rayon::Yield::Executed) => idle = 0,
                    // About a microsecond of polling between yields to the OS.
                    _ if idle < 256 => {
                        idle += 1;
                        std::hint::spin_loop();
                    }
                    _ => std::thread::yield_now(),
                }
            }
        });
    }
    AwakeThreads { stop }
}

/// See [`keep_threads_awake`]: the threads go back to sleeping when it is dropped.
#[must_use = "the threads poll only while the guard lives"]
pub struct AwakeThreads {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for AwakeThreads {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Ask the C allocator to keep freed memory for reuse rather than hand it back to
/// the operating system; returns whether it applied (on glibc only).
///
/// A training step allocates and frees the same buffers of a few hundred kilobytes
/// to a few megabytes every step. glibc maps buffers of that size afresh and unmaps
/// them when they are freed, or trims its heaps, depending on a threshold it adapts
/// as it goes; when it does, every step pays page faults on first touch and TLB
/// shootdowns on every free. Measured on LeNet-5 at batch 64: 2.8–4.9 ms per step
/// with glibc's defaults against 1.2 ms with this setting, run to run. The cost is
/// that the process keeps its peak memory until it exits, which is what a training
/// run needs anyway. Programs that train call this once at start (the `gradflow`
/// command does). It has no effect on a program that installs its own global
/// allocator.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // Buffers up to the largest mmap threshold glibc accepts (32 MiB on 64-bit
        // systems, 512 KiB on 32-bit ones) come from the heap, and heaps are trimmed only
        // when more than 1 GiB at their top is free; fixed values also switch off the
        // adaptation.
        let mmap_max: libc::c_int = if cfg!(target_pointer_width = "64") {
            32 << 20
        } else {
            512 << 10
        };
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        let (mmap, trim) = unsafe {
            (
                libc::mallopt(libc::M_MMAP_THRESHOLD, mmap_max),
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30),
            )
        };
        mmap == 1 && trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// The number of threads kernels run on.
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// Run `f` over `0..n` split into contiguous ranges of at least `min_chunk`
/// elements, on rayon's threads when there is more than one range; ranges are
/// disjoint, so `f` may write the elements of its range of several buffers
/// (this is how optimizers update large parameters in parallel).
pub fn for_each_range(n: usize, min_chunk: usize, f: impl Fn(std::ops::Range<usize>) + Sync + Send) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let min_chunk = min_chunk.max(1);
    if n < 2 * min_chunk || threads == 1 {
        f(0..n);
        return;
    }
    // A few ranges per thread for balance, none smaller than min_chunk; aligned to 64 elements.
    let chunks = (n / min_chunk).min(4 * threads).max(1);
    let chunk = n.div_ceil(chunks).next_multiple_of(64);
    (0..n.div_ceil(chunk))
        .into_par_iter()
        .for_each(|c| f(c * chunk..((c + 1) * chunk).min(n)));
}

/// A raw pointer that kernels hand to their threads, each writing its own disjoint
/// part of the buffer behind it.
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

thread_local! {
    /// Per-thread scratch memory reused across calls (as u64 words, so any
    /// element type fits its alignment): large temporaries would otherwise be
    /// mapped and faulted in afresh on every training step.
    static SCRATCH: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Scratch buffers above this many bytes are allocated per call instead of kept.
const SCRATCH_KEEP_BYTES: usize = 64 << 20;

/// Run `f` on a scratch slice of `len` elements of `T` with unspecified
/// (but initialized) contents, reusing this thread's buffer when it is free.
pub(crate) fn with_scratch<T: crate::Element, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let bytes = len * std::mem::size_of::<T>();
    let words = bytes.div_ceil(8);
    let run = |buf: &mut Vec<u64>| {
        if buf.len() < words {
            buf.resize(words, 0);
        }
        // SAFETY: the buffer holds at least `bytes` initialized bytes, u64 alignment
        // covers f32 and f64, and every bit pattern is a valid float.
        let s = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut T, len) };
        f(s)
    };
    if bytes > SCRATCH_KEEP_BYTES {
        return run(&mut Vec::new());
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => run(&mut buf),
        // Re-entered on this thread (a nested kernel): use a fresh buffer.
        Err(_) => run(&mut Vec::new()),
    })
}

/// A tensor's elements in row-major order: borrowed from its storage (under the
/// read lock) when the view is contiguous, gathered into a copy otherwise.
pub(crate) struct Contiguous<'a> {
    guard: Option<std::sync::RwLockReadGuard<'a, crate::storage::Storage>>,
    owned: Option<crate::storage::CpuStorage>,
    range: std::ops::Range<usize>,
}

impl<'a> Contiguous<'a> {
    pub(crate) fn of(t: &'a crate::Tensor) -> Contiguous<'a> {
        match t.layout().contiguous_range() {
            Some(range) => Contiguous {
                guard: Some(t.storage()),
                owned: None,
                range,
            },
            None => Contiguous {
                guard: None,
                owned: Some(t.contiguous_storage()),
                range: 0..t.numel(),
            },
        }
    }
    /// The elements as `T` (None if the dtype differs).
    pub(crate) fn slice<T: crate::Element>(&self) -> Option<&[T]> {
        let st = match (&self.owned, &self.guard) {
            (Some(s), _) => s,
            (None, Some(g)) => g.cpu(),
            (None, None) => unreachable!("one of the two is set"),
        };
        T::slice(st).map(|s| &s[self.range.clone()])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn freed_memory_is_kept_where_glibc_allows_it() {
        // glibc accepts both settings (a refused value would make mallopt return 0).
        assert_eq!(
            super::keep_freed_memory(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }
}
