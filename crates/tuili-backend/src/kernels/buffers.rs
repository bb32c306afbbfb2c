//! Buffers the kernels read and write: cache-line aligned storage (`AlignedBuf`), weight
//! rows decoded to codes (`Panel`) and the output view (`Out`).

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use super::{MinKind, QFormat, GROUP, QB};

/// 64 bytes, aligned to a cache line: the storage unit of [`AlignedBuf`].
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A growable buffer of `i16` or `f32` that starts on a cache line, so that the
/// 32-byte SIMD loads of whole blocks never straddle two lines.
#[derive(Clone)]
pub(crate) struct AlignedBuf<T> {
    lines: Vec<Line>,
    len: usize,
    _t: PhantomData<T>,
}

/// The element types `AlignedBuf` holds: plain numbers, valid for every bit pattern.
///
/// # Safety
/// An implementor must be valid for every bit pattern of its size (no padding, no niche,
/// no pointer), since `AlignedBuf` hands out zeroed and reinterpreted bytes as `T`.
pub(crate) unsafe trait Plain: Copy {}
// SAFETY: integers and floats are valid for every bit pattern and have no padding.
unsafe impl Plain for u8 {}
// SAFETY: as for u8.
unsafe impl Plain for i16 {}
// SAFETY: as for u8.
unsafe impl Plain for i32 {}
// SAFETY: as for u8 (every bit pattern is some f32, NaNs included).
unsafe impl Plain for f32 {}

impl<T: Plain> Default for AlignedBuf<T> {
    fn default() -> Self {
        AlignedBuf {
            lines: Vec::new(),
            len: 0,
            _t: PhantomData,
        }
    }
}

impl<T: Plain> AlignedBuf<T> {
    /// Sets the length to `len`; new elements are `v`.
    pub(crate) fn resize(&mut self, len: usize, v: T) {
        let old = self.len;
        let bytes = len * std::mem::size_of::<T>();
        if bytes > self.lines.len() * 64 {
            self.lines.resize(bytes.div_ceil(64), Line([0; 64]));
        }
        self.len = len;
        if len > old {
            self[old..].fill(v);
        }
    }
}

impl<T: Plain> Deref for AlignedBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the lines hold at least `len` values of `T` (sized in `resize`), are
        // aligned to 64 >= align_of::<T>(), and every bit pattern is a valid `T`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const T, self.len) }
    }
}

impl<T: Plain> DerefMut for AlignedBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut T, self.len) }
    }
}

impl<T: Plain + std::fmt::Debug> std::fmt::Debug for AlignedBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Plain + PartialEq> PartialEq for AlignedBuf<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

/// Weight rows decoded to integer codes and float scales (see the module docs).
#[derive(Debug, Default, Clone)]
pub(crate) struct Panel {
    pub(crate) nr: usize,
    pub(crate) cols: usize,
    /// Groups per row (the last one may be partial for the 32-element formats).
    pub(crate) ng: usize,
    pub(crate) min: Option<MinKind>,
    /// `[nr, cols]`: integer codes, element order.
    pub(crate) codes: AlignedBuf<i16>,
    /// `[nr, ng * 8]`: float scale of each block (padding 0).
    pub(crate) ws: AlignedBuf<f32>,
    /// `[nr, ng * min.per_group()]`: minimum terms (padding 0).
    pub(crate) minv: AlignedBuf<f32>,
}

impl Panel {
    /// Sizes the buffers for `nr` rows of `cols` in format `fmt`.
    pub(crate) fn reset(&mut self, fmt: QFormat, nr: usize, cols: usize) {
        self.nr = nr;
        self.cols = cols;
        self.ng = (cols / QB).div_ceil(GROUP);
        let mk = fmt.min_kind();
        self.min = Some(mk);
        self.codes.resize(nr * cols, 0);
        self.ws.resize(nr * self.ng * GROUP, 0.0);
        self.minv.resize(nr * self.ng * mk.per_group(), 0.0);
    }
    pub(crate) fn min_kind(&self) -> MinKind {
        self.min.unwrap_or(MinKind::None)
    }
}

/// Where a kernel writes: `out[t * ldo + r]` for token `t` and row `r` of its tile.
#[derive(Clone, Copy)]
pub(crate) struct Out {
    pub(crate) ptr: *mut f32,
    pub(crate) ldo: usize,
}
