//! The machine's f32 peak, measured: independent fused multiply-adds on every thread (AVX-512
//! where available, else AVX2+FMA), no memory traffic.

use std::time::Instant;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_avx512(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); 12];
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm512_fmadd_ps(*r, a, b);
        }
    }
    let mut s = _mm512_set1_ps(0.0);
    for r in acc {
        s = _mm512_add_ps(s, r);
    }
    _mm512_reduce_add_ps(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); 12];
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm256_fmadd_ps(*r, a, b);
        }
    }
    let mut out = [0f32; 8];
    let mut s = _mm256_set1_ps(0.0);
    for r in acc {
        s = _mm256_add_ps(s, r);
    }
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum()
}

/// FLOPs per iteration of a kernel, and the kernel (`iters` iterations per call).
type Kernel = (f64, fn(usize) -> f32);

#[cfg(target_arch = "x86_64")]
fn kernel() -> Option<Kernel> {
    if is_x86_feature_detected!("avx512f") {
        Some((12.0 * 16.0 * 2.0, |n| unsafe { fma_avx512(n) }))
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Some((12.0 * 8.0 * 2.0, |n| unsafe { fma_avx2(n) }))
    } else {
        None
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn kernel() -> Option<Kernel> {
    None
}

/// GFLOP/s of `threads` threads running FMAs for about `secs` seconds (NaN if unknown).
pub fn measure(threads: usize, secs: f64) -> f64 {
    let Some((flops_per_iter, f)) = kernel() else {
        return f64::NAN;
    };
    let iters = 1 << 20;
    let t0 = Instant::now();
    let total: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(move || {
                    let t = Instant::now();
                    let mut n = 0usize;
                    let mut sink = 0f32;
                    while t.elapsed().as_secs_f64() < secs {
                        sink += f(iters);
                        n += 1;
                    }
                    std::hint::black_box(sink);
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 * iters as f64 * flops_per_iter / t0.elapsed().as_secs_f64() / 1e9
}
