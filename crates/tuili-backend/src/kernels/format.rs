//! The weight formats the kernels know: integer ones (`QFormat`, with how each group
//! ends, `MinKind`) and float ones (`FFormat`).

use tuili_gguf::GgmlType;

use super::GROUP;

/// How a format's group ends: which minimum terms it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MinKind {
    /// No minimum (Q4_0, Q5_0, Q8_0, Q3_K, Q6_K, MXFP4).
    None,
    /// One per 32-element block, paired with `s` (Q4_1, Q5_1, Q4_K, Q5_K).
    Per32,
    /// One per 16-element half-block, paired with `s16` (Q2_K).
    Per16,
}

impl MinKind {
    /// Minimum values stored per group.
    pub(crate) fn per_group(self) -> usize {
        match self {
            MinKind::None => 0,
            MinKind::Per32 => GROUP,
            MinKind::Per16 => 2 * GROUP,
        }
    }
}

/// A weight format with integer kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QFormat {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    /// MXFP4: codes are twice the E2M1 values, scales powers of two.
    Mxfp4,
}

impl QFormat {
    /// Every integer format.
    pub(crate) const ALL: [QFormat; 11] = [
        QFormat::Q4_0,
        QFormat::Q4_1,
        QFormat::Q5_0,
        QFormat::Q5_1,
        QFormat::Q8_0,
        QFormat::Q2K,
        QFormat::Q3K,
        QFormat::Q4K,
        QFormat::Q5K,
        QFormat::Q6K,
        QFormat::Mxfp4,
    ];

    /// The integer format of `ty`, if it has one.
    pub(crate) fn of(ty: GgmlType) -> Option<QFormat> {
        Some(match ty {
            GgmlType::Q4_0 => QFormat::Q4_0,
            GgmlType::Q4_1 => QFormat::Q4_1,
            GgmlType::Q5_0 => QFormat::Q5_0,
            GgmlType::Q5_1 => QFormat::Q5_1,
            GgmlType::Q8_0 => QFormat::Q8_0,
            GgmlType::Q2_K => QFormat::Q2K,
            GgmlType::Q3_K => QFormat::Q3K,
            GgmlType::Q4_K => QFormat::Q4K,
            GgmlType::Q5_K => QFormat::Q5K,
            GgmlType::Q6_K => QFormat::Q6K,
            GgmlType::MXFP4 => QFormat::Mxfp4,
            _ => return None,
        })
    }

    pub(crate) fn ty(self) -> GgmlType {
        match self {
            QFormat::Q4_0 => GgmlType::Q4_0,
            QFormat::Q4_1 => GgmlType::Q4_1,
            QFormat::Q5_0 => GgmlType::Q5_0,
            QFormat::Q5_1 => GgmlType::Q5_1,
            QFormat::Q8_0 => GgmlType::Q8_0,
            QFormat::Q2K => GgmlType::Q2_K,
            QFormat::Q3K => GgmlType::Q3_K,
            QFormat::Q4K => GgmlType::Q4_K,
            QFormat::Q5K => GgmlType::Q5_K,
            QFormat::Q6K => GgmlType::Q6_K,
            QFormat::Mxfp4 => GgmlType::MXFP4,
        }
    }

    pub(crate) fn min_kind(self) -> MinKind {
        match self {
            QFormat::Q4_1 | QFormat::Q5_1 | QFormat::Q4K | QFormat::Q5K => MinKind::Per32,
            QFormat::Q2K => MinKind::Per16,
            _ => MinKind::None,
        }
    }

    /// Bytes of one 256-element group (8 legacy blocks or one super-block).
    pub(crate) fn group_bytes(self) -> usize {
        let ty = self.ty();
        256 / ty.block_size() * ty.type_size()
    }
}

/// A float weight format (f32 activations, no quantization).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FFormat {
    F32,
    F16,
    BF16,
}

impl FFormat {
    pub(crate) fn of(ty: GgmlType) -> Option<FFormat> {
        match ty {
            GgmlType::F32 => Some(FFormat::F32),
            GgmlType::F16 => Some(FFormat::F16),
            GgmlType::BF16 => Some(FFormat::BF16),
            _ => None,
        }
    }
}
