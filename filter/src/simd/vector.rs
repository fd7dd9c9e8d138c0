//! The portable half of every kernel: algorithms written once against a small vector trait,
//! then instantiated by each architecture module inside its own `#[target_feature]` functions.
//!
//! All functions here are `#[inline(always)]` so that each instantiation is compiled with the
//! target features of the wrapper that calls it; none of them is ever called on its own.

/// Byte-lane vector operations the kernels need. Masks are vectors whose lanes are all-ones or
/// all-zeros, as the comparison instructions of every supported ISA produce them.
///
/// # Safety
/// Every method is `unsafe` because it executes the implementing type's instructions: the CPU
/// must support them (the arch module's target feature is enabled). `load` reads `BYTES` bytes
/// at `p`, which must be readable.
pub(crate) trait Vector: Copy {
    /// Lanes (bytes) per vector.
    const BYTES: usize;
    unsafe fn splat(b: u8) -> Self;
    /// Unaligned load of `BYTES` bytes.
    unsafe fn load(p: *const u8) -> Self;
    unsafe fn eq(self, o: Self) -> Self;
    /// Unsigned `self <= o` per lane.
    unsafe fn le(self, o: Self) -> Self;
    unsafe fn and(self, o: Self) -> Self;
    unsafe fn or(self, o: Self) -> Self;
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    /// Lanes of `a` where `self` is set, else lanes of `b`.
    unsafe fn select(self, a: Self, b: Self) -> Self;
    /// True when any lane is non-zero.
    unsafe fn any(self) -> bool;
    /// Index of the first set lane of a mask.
    unsafe fn first(self) -> Option<usize>;
}

/// The extra operations of the 16-byte vectors that the hex kernels use.
///
/// # Safety
/// As for [`Vector`]; `store` writes 16 bytes at `p`, `load8` reads and `store8` writes 8, and
/// those bytes must be readable or writable.
pub(crate) trait Vector128: Vector {
    unsafe fn store(self, p: *mut u8);
    /// Loads 8 bytes into the low half (the high half is zero).
    unsafe fn load8(p: *const u8) -> Self;
    /// Stores the low 8 bytes.
    unsafe fn store8(self, p: *mut u8);
    /// Each byte's high nibble, as a byte.
    unsafe fn shr4(self) -> Self;
    /// Interleaves the low halves: `a0 b0 a1 b1 ...`.
    unsafe fn zip_lo(self, b: Self) -> Self;
    /// Interleaves the high halves.
    unsafe fn zip_hi(self, b: Self) -> Self;
    /// Joins nibble pairs (`hi, lo` in adjacent lanes) into bytes: 8 from `self`, then 8 from `b`.
    unsafe fn pack_nibbles(self, b: Self) -> Self;

    /// Nibble values 0..=15 to their lowercase hex digits. The default needs no table lookup
    /// instruction (SSE2 has none); ISAs with a 16-entry byte shuffle override it.
    #[inline(always)]
    unsafe fn nibble_to_hex(self) -> Self {
        // `'0' + n`, plus the distance from `':'` to `'a'` for the letters.
        let letters = Self::splat(10).le(self).and(Self::splat(b'a' - b'0' - 10));
        self.add(Self::splat(b'0')).add(letters)
    }
}

/// Lowercase hex classes: the nibble values of `c` and a mask of lanes that were `0-9a-f`.
///
/// # Safety
/// The CPU must support `V`'s instructions (the arch module's target feature).
#[inline(always)]
unsafe fn hex_classes<V: Vector>(c: V) -> (V, V) {
    // Subtraction wraps, so one unsigned compare checks both ends of each range.
    let d = c.sub(V::splat(b'0'));
    let is_digit = d.le(V::splat(9));
    let a = c.sub(V::splat(b'a'));
    let is_letter = a.le(V::splat(5));
    // A letter's `d` is 39 past its nibble (`'a' - '0' - 10`): one masked subtract, where a
    // select between two computed vectors took three SSE2 instructions and an add.
    let nib = d.sub(is_letter.and(V::splat(b'a' - b'0' - 10)));
    (nib, is_digit.or(is_letter))
}

/// True when some lane of a mask is clear.
///
/// # Safety
/// The CPU must support `V`'s instructions (the arch module's target feature).
#[inline(always)]
unsafe fn any_clear<V: Vector>(mask: V) -> bool {
    mask.eq(V::splat(0)).any()
}

/// 16 bytes to 32 lowercase hex digits.
///
/// # Safety
/// The CPU must support `V`'s instructions (the arch module's target feature); `src` must be
/// readable for 16 bytes and `out` writable for 32.
#[inline(always)]
pub(crate) unsafe fn encode16<V: Vector128>(src: *const u8, out: *mut u8) {
    let v = V::load(src);
    let hi = v.shr4().nibble_to_hex();
    let lo = v.and(V::splat(0x0f)).nibble_to_hex();
    hi.zip_lo(lo).store(out);
    hi.zip_hi(lo).store(out.add(16));
}

/// 8 bytes to 16 lowercase hex digits.
///
/// # Safety
/// The CPU must support `V`'s instructions (the arch module's target feature); `src` must be
/// readable for 8 bytes and `out` writable for 16.
#[inline(always)]
pub(crate) unsafe fn encode8<V: Vector128>(src: *const u8, out: *mut u8) {
    let v = V::load8(src);
    let hi = v.shr4().nibble_to_hex();
    let lo = v.and(V::splat(0x0f)).nibble_to_hex();
    hi.zip_lo(lo).store(out);
}

/// 32 lowercase hex digits to 16 bytes; false (with `out` written anyway) on any other byte.
///
/// # Safety
/// The CPU must support `V`'s instructions (the arch module's target feature); `src` must be
/// readable for 32 bytes and `out` writable for 16.
#[inline(always)]
pub(crate) unsafe fn decode32<V: Vector128>(src: *const u8, out: *mut u8) -> bool {
    let (n0, ok0) = hex_classes(V::load(src));
    let (n1, ok1) = hex_classes(V::load(src.add(16)));
    n0.pack_nibbles(n1).store(out);
    !any_clear(ok0.and(ok1))
}

/// 16 lowercase hex digits to 8 bytes; false on any other byte.
///
/// # Safety
/// The CPU must support `V`'s instructions (the arch module's target feature); `src` must be
/// readable for 16 bytes and `out` writable for 8.
#[inline(always)]
pub(crate) unsafe fn decode16<V: Vector128>(src: *const u8, out: *mut u8) -> bool {
    let (n, ok) = hex_classes(V::load(src));
    n.pack_nibbles(n).store8(out);
    !any_clear(ok)
}

/// `0xff` where a version-00 `traceparent` must have a `-`, zero where it must have hex.
/// Padded to 64 so that any vector width can load it at the same offsets as the value.
pub(crate) static TRACEPARENT_DASHES: [u8; 64] = {
    let mut t = [0u8; 64];
    t[2] = 0xff;
    t[35] = 0xff;
    t[52] = 0xff;
    t
};

/// The whole 55-byte `traceparent` shape in one pass: `-` at 2, 35 and 52, lowercase hex
/// everywhere else. Overlapping loads cover the tail, so no lane is read past the value.
///
/// # Safety
/// The CPU must support `V`'s instructions (the arch module's target feature); `v` must be
/// readable for 55 bytes.
#[inline(always)]
pub(crate) unsafe fn traceparent_shape<V: Vector>(v: *const u8) -> bool {
    const LEN: usize = 55;
    let dash = V::splat(b'-');
    let mut ok = V::splat(0xff);
    let mut off = 0;
    loop {
        let at = off.min(LEN - V::BYTES);
        let c = V::load(v.add(at));
        let want_dash = V::load(TRACEPARENT_DASHES.as_ptr().add(at));
        let (_, is_hex) = hex_classes(c);
        ok = ok.and(want_dash.select(c.eq(dash), is_hex));
        if at == LEN - V::BYTES {
            break;
        }
        off += V::BYTES;
    }
    !any_clear(ok)
}

/// The whole fast path of a version-00 `traceparent` (55 bytes at `v`): `00-`, 32 lowercase
/// hex digits, `-`, 16 lowercase hex digits, `-`, 2 lowercase hex digits, with neither id all
/// zero. Writes the trace id's 16 bytes to `trace` and the span id's 8 to `span` and returns
/// the flags byte; `None` (with the outputs unspecified) for anything else, which the caller
/// sends to the rule-by-rule parser.
///
/// The ids are three 16-byte loads, classified and decoded together with one mask test; the
/// seven fixed bytes are read as words, since classifying them in a vector took more
/// instructions than the table lookups of the two flag digits.
///
/// # Safety
/// The CPU must support `V`'s instructions (the arch module's target feature); `v` must be
/// readable for 55 bytes, `trace` writable for 16 and `span` for 8.
#[inline(always)]
pub(crate) unsafe fn traceparent00<V: Vector128>(
    v: *const u8,
    trace: *mut u8,
    span: *mut u8,
) -> Option<u8> {
    let (n0, ok0) = hex_classes(V::load(v.add(3)));
    let (n1, ok1) = hex_classes(V::load(v.add(19)));
    let (n2, ok2) = hex_classes(V::load(v.add(36)));
    let ids_hex = !any_clear(ok0.and(ok1).and(ok2));
    // `00-` at 0 (with the first trace digit after it), `-` at 35 and 52.
    let head = u32::from_le_bytes(v.cast::<[u8; 4]>().read_unaligned());
    let dashes = (head & 0x00ff_ffff == u32::from_le_bytes(*b"00-\0"))
        & (*v.add(35) == b'-')
        & (*v.add(52) == b'-');
    let (f0, f1) = (
        crate::simd::scalar::DECODE[usize::from(*v.add(53))],
        crate::simd::scalar::DECODE[usize::from(*v.add(54))],
    );
    // `DECODE` is 0xff for anything but lowercase hex: one OR shows a bad digit.
    if !(ids_hex & dashes & ((f0 | f1) & 0xf0 == 0)) {
        return None;
    }
    let t = n0.pack_nibbles(n1);
    t.store(trace);
    n2.pack_nibbles(n2).store8(span);
    let tw = trace.cast::<[u64; 2]>().read_unaligned();
    let sw = span.cast::<u64>().read_unaligned();
    if tw[0] | tw[1] == 0 || sw == 0 {
        return None;
    }
    Some(f0 << 4 | f1)
}

/// The first byte of `hay` that is not ASCII (`>= 0x80`), for `hay.len() >= BYTES`. Text on the
/// request path is nearly always ASCII, so this decides whether a value can be copied as is.
///
/// # Safety
/// The CPU must support `V`'s instructions (the arch module's target feature).
#[inline(always)]
pub(crate) unsafe fn find_non_ascii<V: Vector>(hay: &[u8]) -> Option<usize> {
    let high = V::splat(0x80);
    first_block_hit::<V>(hay, |at| {
        high.le(V::load(hay.as_ptr().add(at)))
            .first()
            .map(|i| at + i)
    })
}

/// The first position `hit` reports over `hay`'s blocks of `V::BYTES`, for
/// `hay.len() >= V::BYTES`: whole blocks in order, then one overlapping block for the tail
/// (its lanes already searched found nothing, so a hit there is still the first).
///
/// # Safety
/// `hit(at)` is called only with `at + V::BYTES <= hay.len()`; it may load that block.
#[inline(always)]
unsafe fn first_block_hit<V: Vector>(
    hay: &[u8],
    hit: impl Fn(usize) -> Option<usize>,
) -> Option<usize> {
    let last = hay.len() - V::BYTES;
    let mut at = 0;
    while at < last {
        if let Some(i) = hit(at) {
            return Some(i);
        }
        at += V::BYTES;
    }
    hit(last)
}

/// The first byte of `hay` that a `tracestate` value cannot hold (anything but printable ASCII
/// `0x21..=0x7e`, and `,` and `=`), for `hay.len() >= BYTES`: where a plain value ends.
///
/// # Safety
/// The CPU must support `V`'s instructions (the arch module's target feature).
#[inline(always)]
pub(crate) unsafe fn find_non_tracestate_value<V: Vector>(hay: &[u8]) -> Option<usize> {
    let (space, del) = (V::splat(0x20), V::splat(0x7f));
    let (comma, equals) = (V::splat(b','), V::splat(b'='));
    first_block_hit::<V>(hay, |at| {
        let v = V::load(hay.as_ptr().add(at));
        v.le(space)
            .or(del.le(v))
            .or(v.eq(comma))
            .or(v.eq(equals))
            .first()
            .map(|i| at + i)
    })
}

/// The safe, fixed-size entry points of every kernel for one architecture's vector type `$v`.
/// Each arch module states, above its invocation, why calling the unsafe kernels is sound there.
macro_rules! safe_kernels {
    ($v:ty) => {
        #[inline]
        pub(crate) fn encode16(src: &[u8; 16], out: &mut [u8; 32]) {
            // SAFETY: the fixed-size arrays are exactly what `encode16` reads and writes, and the
            // invoking arch module guarantees `$v`'s target feature (see above its invocation).
            unsafe { $crate::simd::vector::encode16::<$v>(src.as_ptr(), out.as_mut_ptr()) }
        }

        #[inline]
        pub(crate) fn encode8(src: &[u8; 8], out: &mut [u8; 16]) {
            // SAFETY: the fixed-size arrays are exactly what `encode8` reads and writes, and the
            // invoking arch module guarantees `$v`'s target feature (see above its invocation).
            unsafe { $crate::simd::vector::encode8::<$v>(src.as_ptr(), out.as_mut_ptr()) }
        }

        #[inline]
        pub(crate) fn decode32(src: &[u8; 32], out: &mut [u8; 16]) -> bool {
            // SAFETY: the fixed-size arrays are exactly what `decode32` reads and writes, and the
            // invoking arch module guarantees `$v`'s target feature (see above its invocation).
            unsafe { $crate::simd::vector::decode32::<$v>(src.as_ptr(), out.as_mut_ptr()) }
        }

        #[inline]
        pub(crate) fn decode16(src: &[u8; 16], out: &mut [u8; 8]) -> bool {
            // SAFETY: the fixed-size arrays are exactly what `decode16` reads and writes, and the
            // invoking arch module guarantees `$v`'s target feature (see above its invocation).
            unsafe { $crate::simd::vector::decode16::<$v>(src.as_ptr(), out.as_mut_ptr()) }
        }

        #[inline]
        pub(crate) fn traceparent_shape(v: &[u8; 55]) -> bool {
            // SAFETY: the fixed-size arrays are exactly what `traceparent_shape` reads and writes, and the
            // invoking arch module guarantees `$v`'s target feature (see above its invocation).
            unsafe { $crate::simd::vector::traceparent_shape::<$v>(v.as_ptr()) }
        }

        #[inline]
        pub(crate) fn traceparent00(
            v: &[u8; 55],
            trace: &mut [u8; 16],
            span: &mut [u8; 8],
        ) -> Option<u8> {
            // SAFETY: the fixed-size arrays are exactly what `traceparent00` reads and writes,
            // and the invoking arch module guarantees `$v`'s target feature (see above its
            // invocation).
            unsafe {
                $crate::simd::vector::traceparent00::<$v>(
                    v.as_ptr(),
                    trace.as_mut_ptr(),
                    span.as_mut_ptr(),
                )
            }
        }

        /// For `hay.len() >= 16`.
        #[inline]
        pub(crate) fn find_non_ascii(hay: &[u8]) -> Option<usize> {
            debug_assert!(hay.len() >= 16);
            // SAFETY: every load reads `BYTES` bytes at an offset at most `len - BYTES` (the
            // length is at least 16), and the invoking arch module guarantees `$v`'s target
            // feature (see above its invocation).
            unsafe { $crate::simd::vector::find_non_ascii::<$v>(hay) }
        }

        /// For `hay.len() >= 16`.
        #[inline]
        pub(crate) fn find_non_tracestate_value(hay: &[u8]) -> Option<usize> {
            debug_assert!(hay.len() >= 16);
            // SAFETY: every load reads `BYTES` bytes at an offset at most `len - BYTES` (the
            // length is at least 16), and the invoking arch module guarantees `$v`'s target
            // feature (see above its invocation).
            unsafe { $crate::simd::vector::find_non_tracestate_value::<$v>(hay) }
        }
    };
}
pub(crate) use safe_kernels;
