//! TensorFlow's record framing, the container of a TensorBoard event file: for each record,
//! its length (u64, little-endian), the masked CRC32C of those 8 bytes, the data, the masked
//! CRC32C of the data. CRC32C (Castagnoli) is computed here with a 256-entry table: a few
//! lines, checked against the standard check value, rather than a dependency.

/// The CRC32C polynomial, reflected.
const POLY: u32 = 0x82F6_3B78;

/// The byte-wise lookup table of [`crc32c`], built at compile time.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 { (c >> 1) ^ POLY } else { c >> 1 };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC32C (Castagnoli) of `data`, as TensorFlow's `crc32c::Value`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TensorFlow's masked CRC (`crc32c::Mask`): a CRC stored beside the data it covers is rotated
/// and offset so that a CRC of data holding CRCs stays well distributed.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// `data` framed as one record (length, masked CRC of the length, data, masked CRC of data).
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The standard CRC-32C check value (RFC 3720's polynomial) and the iSCSI test vector of 32
    /// zero bytes.
    #[test]
    fn crc32c_matches_the_standard_check_values() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(b""), 0);
    }

    /// A record of TensorFlow's own writer: the first record of every event file
    /// (`Event{wall_time: 0, file_version: "brain.Event:2"}`), as `tf.summary` frames it; the
    /// bytes were produced by tensorboard's `RecordWriter` (tensorboard 2.21.0).
    #[test]
    fn a_record_is_framed_as_tensorflow_frames_it() {
        let data = b"\x1a\x0dbrain.Event:2";
        let got = frame(data);
        assert_eq!(&got[..8], &15u64.to_le_bytes());
        assert_eq!(&got[8..12], &masked_crc32c(&got[..8]).to_le_bytes());
        assert_eq!(&got[12..27], data);
        assert_eq!(got.len(), 8 + 4 + 15 + 4);
        assert_eq!(hex::encode(&got), KNOWN_RECORD);
    }

    /// tensorboard 2.21.0's `RecordWriter(f).write(b"\x1a\x0dbrain.Event:2")`.
    const KNOWN_RECORD: &str = "0f000000000000006d532b091a0d627261696e2e4576656e743a32fc985129";
}
