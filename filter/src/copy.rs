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
    let n = src.len();
    if n > 32 || n == 0 {
        buf.extend_from_slice(src);
        return;
    }
    buf.reserve(n);
    // SAFETY: `reserve(n)` left room for `n` bytes past the length, which `write` fills.
    unsafe {
        write(src, buf.as_mut_ptr().add(buf.len()));
        buf.set_len(buf.len() + n);
    }
}

/// Copies `src` to `dst` like `copy_nonoverlapping`, with fixed-size moves up to 64 bytes (a
/// call to `memcpy` beyond), for writers that reserved a whole record's room once.
///
/// # Safety
///
/// `dst` must be valid for `src.len()` writes and must not overlap `src`.
#[inline(always)]
pub unsafe fn write(src: &[u8], dst: *mut u8) {
    /// Copies `N` bytes from the start and `N` from the end of `src` (`N <= src.len() <= 2N`).
    #[inline(always)]
    unsafe fn two<const N: usize>(src: &[u8], d: *mut u8) {
        let n = src.len();
        debug_assert!(N <= n && n <= 2 * N);
        // SAFETY: the caller gives room for `n` bytes at `d` and `src` has `n`; both moves stay
        // within the first `n` bytes of each (`n - N + N == n`), and they do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr(), d, N);
            core::ptr::copy_nonoverlapping(src.as_ptr().add(n - N), d.add(n - N), N);
        }
    }
    let n = src.len();
    // SAFETY: every write below is within `dst[..n]`, valid by the caller's contract.
    unsafe {
        match n {
            0 => {}
            // The first, middle and last byte cover 1, 2 and 3 bytes.
            1..=3 => {
                *dst = src[0];
                *dst.add(n / 2) = src[n / 2];
                *dst.add(n - 1) = src[n - 1];
            }
            4..=7 => two::<4>(src, dst),
            8..=15 => two::<8>(src, dst),
            16..=32 => two::<16>(src, dst),
            33..=64 => two::<32>(src, dst),
            _ => core::ptr::copy_nonoverlapping(src.as_ptr(), dst, n),
        }
    }
}

/// The high bit of every byte: a word with none of them set holds ASCII only.
const HIGH: u128 = 0x8080_8080_8080_8080_8080_8080_8080_8080;

/// [`write`] for text that must be ASCII: copies `src` to `dst` and tells whether every byte
/// was ASCII. Up to 64 bytes the words the moves carry are tested, instead of scanning the
/// bytes in a pass of their own (longer input is scanned, then copied). Nearly every
/// attribute value is short ASCII; when this returns false the caller throws the copy away
/// (it wrote into spare room only).
///
/// # Safety
///
/// `dst` must be valid for `src.len()` writes and must not overlap `src`.
#[inline(always)]
pub unsafe fn write_ascii(src: &[u8], dst: *mut u8) -> bool {
    /// Moves `N`-byte words from the start and from the end of `src` (`N <= src.len() <= 2N`,
    /// `N` a multiple of 16) and returns their bytes OR-ed together.
    #[inline(always)]
    unsafe fn two<const N: usize>(src: &[u8], d: *mut u8) -> u128 {
        let n = src.len();
        debug_assert!(N <= n && n <= 2 * N);
        let mut seen = 0u128;
        let mut i = 0;
        while i < N {
            // SAFETY: as in `write`'s `two`: both moves stay within the first `n` bytes of `src`
            // and `d`, 16 bytes at a time.
            unsafe {
                let a = src.as_ptr().add(i).cast::<u128>().read_unaligned();
                let b = src.as_ptr().add(n - N + i).cast::<u128>().read_unaligned();
                d.add(i).cast::<u128>().write_unaligned(a);
                d.add(n - N + i).cast::<u128>().write_unaligned(b);
                seen |= a | b;
            }
            i += 16;
        }
        seen
    }
    let n = src.len();
    // SAFETY: every write below is within `dst[..n]`, valid by the caller's contract, and every
    // read within `src`.
    let seen: u128 = unsafe {
        match n {
            0 => 0,
            1..=3 => {
                let (a, b, c) = (src[0], src[n / 2], src[n - 1]);
                *dst = a;
                *dst.add(n / 2) = b;
                *dst.add(n - 1) = c;
                u128::from(a | b | c)
            }
            4..=7 => {
                let a = src.as_ptr().cast::<u32>().read_unaligned();
                let b = src.as_ptr().add(n - 4).cast::<u32>().read_unaligned();
                dst.cast::<u32>().write_unaligned(a);
                dst.add(n - 4).cast::<u32>().write_unaligned(b);
                u128::from(a | b)
            }
            8..=15 => {
                let a = src.as_ptr().cast::<u64>().read_unaligned();
                let b = src.as_ptr().add(n - 8).cast::<u64>().read_unaligned();
                dst.cast::<u64>().write_unaligned(a);
                dst.add(n - 8).cast::<u64>().write_unaligned(b);
                u128::from(a | b)
            }
            16..=32 => two::<16>(src, dst),
            33..=64 => two::<32>(src, dst),
            _ => {
                let ascii = crate::simd::find_non_ascii(src).is_none();
                core::ptr::copy_nonoverlapping(src.as_ptr(), dst, n);
                return ascii;
            }
        }
    };
    seen & HIGH == 0
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

        #[test]
        fn write_ascii_copies_and_tells_ascii(
            src in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => 0u8..0x80,
                    1 => proptest::prelude::any::<u8>(),
                ],
                0..100,
            ),
        ) {
            let mut dst = vec![7u8; src.len() + 2];
            // SAFETY: `dst[1..]` has room for `src`, and they are separate vectors.
            let ascii = unsafe { write_ascii(&src, dst.as_mut_ptr().add(1)) };
            proptest::prop_assert_eq!(ascii, src.is_ascii());
            proptest::prop_assert_eq!(&dst[1..=src.len()], &src[..]);
            proptest::prop_assert_eq!((dst[0], dst[src.len() + 1]), (7, 7));
        }

        #[test]
        fn write_is_copy_nonoverlapping(
            src in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..70),
        ) {
            let mut dst = vec![7u8; src.len() + 2];
            // SAFETY: `dst[1..]` has room for `src`, and they are separate vectors.
            unsafe { write(&src, dst.as_mut_ptr().add(1)) };
            proptest::prop_assert_eq!(&dst[1..=src.len()], &src[..]);
            proptest::prop_assert_eq!((dst[0], dst[src.len() + 1]), (7, 7));
        }
    }
}
