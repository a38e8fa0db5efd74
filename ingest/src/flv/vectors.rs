//! Test vectors: real encoder output, plus a bit writer for synthetic headers.
//!
//! Every `REAL_AVC` entry is the first FLV video tag body ffmpeg 6 / libx264 r3095 wrote for
//! `ffmpeg -f lavfi -i testsrc2=size=WxH:rate=R -frames:v 1 -c:v libx264 <opts> -an -f flv out.flv`
//! (opts per entry). The expected fields were cross-checked with `ffprobe` and with
//! `ffmpeg -i out.flv -c copy -bsf:v trace_headers -f null -`.

/// One real H.264 sequence header and what its SPS says.
pub(super) struct RealAvc {
    pub(super) name: &'static str,
    /// The whole FLV VIDEODATA body: `17 00 000000` + AVCDecoderConfigurationRecord.
    pub(super) flv_tag: &'static str,
    /// The record's first (only) SPS NAL unit.
    pub(super) sps: &'static str,
    pub(super) profile_idc: u8,
    pub(super) constraint_flags: u8,
    pub(super) level_idc: u8,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) frame_rate: f64,
    pub(super) codec: &'static str,
}

pub(super) const REAL_AVC: [RealAvc; 7] = [
    // 1280x720, rate=30, -profile:v high -level 3.1
    RealAvc {
        name: "720p30 high",
        flv_tag: "17000000000164001fffe1001a6764001facd9405005bb0110000003001000000303c0f1831960\
                  01000668ebe3cb22c0fdf8f800",
        sps: "6764001facd9405005bb0110000003001000000303c0f1831960",
        profile_idc: 100,
        constraint_flags: 0,
        level_idc: 31,
        width: 1280,
        height: 720,
        frame_rate: 30.0,
        codec: "avc1.64001f",
    },
    // 1920x1080, rate=25, -profile:v high (1088 coded lines, frame_crop_bottom_offset 4)
    RealAvc {
        name: "1080p25 high",
        flv_tag: "170000000001640028ffe1001b67640028acd940780227e5c044000003000400000300c83c60c658\
                  01000668ebe3cb22c0fdf8f800",
        sps: "67640028acd940780227e5c044000003000400000300c83c60c658",
        profile_idc: 100,
        constraint_flags: 0,
        level_idc: 40,
        width: 1920,
        height: 1080,
        frame_rate: 25.0,
        codec: "avc1.640028",
    },
    // 640x360, rate=30000/1001, -profile:v baseline (368 coded lines)
    RealAvc {
        name: "360p29.97 baseline",
        flv_tag: "17000000000142c01effe100186742c01ed900a02ff9701100000303e90000ea600f162e48\
                  01000568cb83cb20",
        sps: "6742c01ed900a02ff9701100000303e90000ea600f162e48",
        profile_idc: 66,
        constraint_flags: 0xc0,
        level_idc: 30,
        width: 640,
        height: 360,
        frame_rate: 30_000.0 / 1001.0,
        codec: "avc1.42c01e",
    },
    // 640x360, rate=24, -profile:v main
    RealAvc {
        name: "360p24 main",
        flv_tag: "1700000000014d401effe10018674d401eeca05017fcb808800000030080000018078b16cb\
                  01000568ebe3cb20",
        sps: "674d401eeca05017fcb808800000030080000018078b16cb",
        profile_idc: 77,
        constraint_flags: 0x40,
        level_idc: 30,
        width: 640,
        height: 360,
        frame_rate: 24.0,
        codec: "avc1.4d401e",
    },
    // 1920x1080, rate=25, -flags +ildct (field coding: frame_mbs_only_flag 0)
    RealAvc {
        name: "1080i25 high",
        flv_tag: "170000000001640028ffe1001a67640028acd94078044fde0220000003002000000643e2c5b2c0\
                  01000668fba3cb22c0fdf8f800",
        sps: "67640028acd94078044fde0220000003002000000643e2c5b2c0",
        profile_idc: 100,
        constraint_flags: 0,
        level_idc: 40,
        width: 1920,
        height: 1080,
        frame_rate: 25.0,
        codec: "avc1.640028",
    },
    // 854x480, rate=50, -pix_fmt yuv444p -profile:v high444 (crop unit 1)
    RealAvc {
        name: "480p50 high444",
        flv_tag: "170000000001f4001fffe1001b67f4001f919b281b07bc5f80880000030008000003032078c18cb0\
                  01000668ebe3c44844fff8f800",
        sps: "67f4001f919b281b07bc5f80880000030008000003032078c18cb0",
        profile_idc: 244,
        constraint_flags: 0,
        level_idc: 31,
        width: 854,
        height: 480,
        frame_rate: 50.0,
        codec: "avc1.f4001f",
    },
    // 426x240, rate=15, -pix_fmt yuv422p -profile:v high422 (horizontal crop unit 2)
    RealAvc {
        name: "240p15 high422",
        flv_tag: "1700000000017a0015ffe1001a677a0015bcd941b1fe4f0110000003001000000301e0f162d960\
                  01000668ebe3cb22c0fef8f800",
        sps: "677a0015bcd941b1fe4f0110000003001000000301e0f162d960",
        profile_idc: 122,
        constraint_flags: 0,
        level_idc: 21,
        width: 426,
        height: 240,
        frame_rate: 15.0,
        codec: "avc1.7a0015",
    },
];

/// A synthetic High 4:4:4 SPS (x264 never writes these fields): 12 scaling lists (full 4x4,
/// use-default, full 8x8 with wrap-around, early end), pic_order_cnt_type 1 with a 3-entry
/// cycle, 1920x1088 field-coded cropped to 1080, extended SAR, full VUI, 48000/1001 ticks.
/// Written by a script and checked field by field with ffmpeg's `trace_headers` filter.
pub(super) const SYNTHETIC_SPS_444_SCALING_POC1: &str =
    "67f400284436c51ce739ce739ce739ce7844203c0064a49249249249249249249249249249249249249\
     249249247ff088d0a622160190603c0227e5ffc0010000fdc0404069400000fa40002ee0210";

/// Real FLV tags from `ffmpeg -f lavfi -i color=c=blue:size=64x64:rate=30 -f lavfi -i
/// anullsrc=r=44100:cl=mono -t 0.3 -c:v libx264 -bf 2 -c:a aac -f flv out.flv`.
pub(super) mod small {
    /// AVC sequence header, 64x64 High@1.0.
    pub(in super::super) const SEQ_HEADER: &str =
        "17000000000164000affe100186764000aacd94426c044000003000400000300f03c48965801000668ebe3cb22c0fdf8f800";
    /// Inter frame (P), CTS 133 ms, one 10-byte NAL unit.
    pub(in super::super) const P_FRAME: &str = "27010000850000000a419a236c433ffe9e2df0";
    /// Inter frame (B), CTS 33 ms.
    pub(in super::super) const B_FRAME: &str = "270100002100000008419e4178857f0c39";
    /// AVC end of sequence.
    pub(in super::super) const END_OF_SEQUENCE: &str = "1702000000";
    /// AAC sequence header: LC, 44100 Hz, mono, then an SBR sync extension.
    pub(in super::super) const AAC_SEQ_HEADER: &str = "af00120856e500";
    /// One raw AAC frame (digital silence).
    pub(in super::super) const AAC_FRAME: &str = "af0101182007";
}

/// Decodes a hex string, ignoring whitespace; test input only.
pub(super) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => panic!("bad hex digit {b}"),
        })
        .collect();
    digits
        .chunks(2)
        .map(|p| p.iter().fold(0, |acc, d| acc << 4 | d))
        .collect()
}

/// MSB-first bit writer for synthetic headers.
#[derive(Default)]
pub(super) struct BitWriter {
    bits: Vec<bool>,
}

impl BitWriter {
    pub(super) fn u(&mut self, n: u32, v: u64) -> &mut Self {
        for i in (0..n).rev() {
            self.bits.push((v >> i) & 1 == 1);
        }
        self
    }

    pub(super) fn ue(&mut self, v: u64) -> &mut Self {
        let v = v + 1;
        let n = 64 - v.leading_zeros();
        self.u(n - 1, 0).u(n, v)
    }

    /// The bits, zero-padded to a byte boundary (no stop bit, no emulation prevention).
    pub(super) fn bytes(&self) -> Vec<u8> {
        self.bits
            .chunks(8)
            .map(|c| {
                (0..8).fold(0u8, |acc, i| {
                    acc << 1 | u8::from(c.get(i).copied().unwrap_or(false))
                })
            })
            .collect()
    }
}
