//! Appending the short byte strings spans are made of (keys, methods, hosts, cluster names:
//! almost all of 4 to 32 bytes). `extend_from_slice` with a run-time length is a call into
//! `memcpy` (in wasm, `memory.copy`, a call out of the JIT'd code), whose fixed cost dwarfs a
//! 10-byte copy: on the core path these copies were a sixth of the time. Two overlapping
//! fixed-size moves cover any length in `N..=2N` without a call or a loop.

/// Appends the first `n` bytes of a fixed-size `src` (a varint's scratch, say) with one
/// fixed-size move; `n` is clamped to `N`.
#[inline]
pub fn append_prefix<const N: usize>(src: &[u8; N], n: usize, buf: &mut Vec<u8>) {
    let n = n.min(N);
    buf.reserve(N);
    let spare = buf.spare_capacity_mut();
    // SAFETY: `reserve(N)` left at least `N` spare bytes, and `src` has `N`.
    unsafe {
        core::ptr::copy_nonoverlapping(src.as_ptr(), spare.as_mut_ptr().cast::<u8>(), N);
        // Only the first `n` of the `N` bytes written become part of the vector.
        buf.set_len(buf.len() + n);
    }
}

/// Appends `src` to `buf` like `extend_from_slice`.
#[inline(always)]
pub fn append(src: &[u8], buf: &mut Vec<u8>) {
    /// Copies `N` bytes from the start and `N` from the end of `src` (`N <= src.len() <= 2N`).
    #[inline(always)]
    fn two<const N: usize>(src: &[u8], dst: &mut [core::mem::MaybeUninit<u8>]) {
        let n = src.len();
        debug_assert!(N <= n && n <= 2 * N && dst.len() >= n);
        // SAFETY: `dst` has room for `n` bytes and `src` has `n`; both moves stay within the
        // first `n` bytes of each (`n - N + N == n`), and the slices do not overlap.
        unsafe {
            let d = dst.as_mut_ptr().cast::<u8>();
            core::ptr::copy_nonoverlapping(src.as_ptr(), d, N);
            core::ptr::copy_nonoverlapping(src.as_ptr().add(n - N), d.add(n - N), N);
        }
    }
    let n = src.len();
    if n > 32 || n == 0 {
        buf.extend_from_slice(src);
        return;
    }
    buf.reserve(n);
    let spare = buf.spare_capacity_mut();
    match n {
        // The first, middle and last byte cover 1, 2 and 3 bytes.
        1..=3 => {
            spare[0].write(src[0]);
            spare[n / 2].write(src[n / 2]);
            spare[n - 1].write(src[n - 1]);
        }
        4..=7 => two::<4>(src, spare),
        8..=15 => two::<8>(src, spare),
        _ => two::<16>(src, spare),
    }
    // SAFETY: the first `n` spare bytes were just initialised.
    unsafe { buf.set_len(buf.len() + n) };
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn append_prefix_takes_n(src: [u8; 10], n in 0usize..12) {
            let mut buf = vec![7u8];
            append_prefix(&src, n, &mut buf);
            proptest::prop_assert_eq!(&buf[1..], &src[..n.min(10)]);
        }

        #[test]
        fn append_is_extend_from_slice(
            head in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..5),
            src in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..70),
        ) {
            let mut buf = head.clone();
            append(&src, &mut buf);
            proptest::prop_assert_eq!(buf, [head, src].concat());
        }
    }
}
