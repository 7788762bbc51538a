//! Shared pieces of the block layouts: little-endian scalar fields with alignment 1 (so that a
//! block can be viewed in place at any byte offset of a mapped file), the dot-type blocks every
//! format quantizes its activations to, and the trait that ties a block to its dot type.

use super::GgmlType;
use bytemuck::{Pod, Zeroable};

/// An IEEE half stored as two little-endian bytes (`ggml_half`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct F16(pub [u8; 2]);

impl F16 {
    #[inline]
    pub fn to_f32(self) -> f32 {
        half::f16::from_bits(u16::from_le_bytes(self.0)).to_f32()
    }

    /// Round to nearest even, as ggml's `GGML_FP32_TO_FP16`.
    #[inline]
    pub fn from_f32(x: f32) -> F16 {
        F16(half::f16::from_f32(x).to_bits().to_le_bytes())
    }
}

impl std::fmt::Debug for F16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_f32())
    }
}

/// A little-endian scalar field with alignment 1: `get` reads it, `new` writes it.
macro_rules! le_field {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $n:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, PartialEq, Pod, Zeroable)]
        #[repr(transparent)]
        pub struct $name(pub [u8; $n]);

        impl $name {
            #[inline]
            pub fn get(self) -> $ty {
                <$ty>::from_le_bytes(self.0)
            }

            #[inline]
            pub fn new(x: $ty) -> $name {
                $name(x.to_le_bytes())
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.get())
            }
        }
    };
}

le_field!(
    /// An f32 stored as four little-endian bytes.
    F32Le, f32, 4
);
le_field!(
    /// An i16 stored as two little-endian bytes.
    I16Le, i16, 2
);
le_field!(
    /// A u16 stored as two little-endian bytes (`uint16_t` fields of the blocks).
    U16Le, u16, 2
);
impl Eq for I16Le {}
impl Eq for U16Le {}

/// A quant block: its ggml type and the type its dot product takes as activations.
pub trait QuantBlock: Pod {
    const TYPE: GgmlType;
    type VecDot: QuantBlock;
}

pub const QK8_0: usize = 32;
pub const QK8_1: usize = 32;

/// `block_q8_0`: 32 values, one f16 scale.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: F16,
    pub qs: [i8; QK8_0],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// `block_q8_1`: 32 values, an f16 scale and `s = d * sum(qs)`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: F16,
    pub s: F16,
    pub qs: [i8; QK8_1],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

/// `block_q8_K`: 256 values, an f32 scale, and the sums of each group of 16 quants.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: F32Le,
    pub qs: [i8; super::QK_K],
    pub bsums: [I16Le; super::QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl QuantBlock for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    type VecDot = BlockQ8_0;
}

impl QuantBlock for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    type VecDot = BlockQ8_1;
}

impl QuantBlock for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8K;
    type VecDot = BlockQ8K;
}

/// Views bytes as blocks. Blocks have alignment 1, so only the length can be wrong: a length
/// that is not a whole number of blocks is a caller bug, checked by the public entry points.
#[inline]
pub fn as_blocks<B: Pod>(bytes: &[u8]) -> &[B] {
    bytemuck::cast_slice(bytes)
}

#[inline]
pub fn as_blocks_mut<B: Pod>(bytes: &mut [u8]) -> &mut [B] {
    bytemuck::cast_slice_mut(bytes)
}
