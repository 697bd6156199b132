//! The checksums the SQLite store keeps beside each row it reads back, and how a row is
//! checked against them.
//!
//! Three generations of rows live side by side in one file, and each row says which it is by
//! the column its checksum is in, never by its value:
//! - schema version 8 on writes a CRC-32C (Castagnoli, the code iSCSI, ext4 and SCTP use to
//!   catch damage) into the `crc32c` columns (`crc32c` of journal entries and inbox
//!   messages, `input_crc32c` and `end_crc32c` of runs), stored as the integer 0..2^32;
//! - versions 3 to 7 wrote a 64-bit FNV-1a into the `checksum` columns (`checksum`,
//!   `input_checksum`, `end_checksum`; inbox messages from version 7), which a row keeps;
//! - rows from before carry none and are read as they are.
//!
//! A row is intact when every checksum it carries matches its fields, so a file written by any
//! version verifies, and no row can be checked with the wrong algorithm. A row that gets a new
//! checksum has the other column cleared in the same statement (a run's end).
//!
//! A CRC-32C covers, in this order: the little-endian `u64`s of the row's numbers and of the
//! byte lengths of its texts, then the texts' bytes; the lengths make the texts' boundaries
//! part of what is checked, so no byte can move from one field to the next unnoticed:
//! - a journal entry: `seq, attempt, at, len(step), len(kind), len(payload)`, then
//!   `step, kind, payload` (the kind as stored, so a changed kind is caught too);
//! - an inbox message: `seq, at, len(kind), len(name), len(payload)`, then
//!   `kind, name, payload`;
//! - a run's input, output or error: its bytes alone.
//!
//! The run's id is in none of them: it is the key the row is found by.
//!
//! Why CRC-32C: it is an error-detecting code, built to catch the damage storage does. It
//! catches every burst of up to 32 changed bits, every change of up to 3 bits in up to
//! 256 MiB checked and of up to 5 bits in up to 655 bytes (Hamming distance 4 up to 2^31
//! bits, 6 up to 5,243); a wider random change slips through with odds of 2^-32. FNV-1a
//! is a hash: its 64 bits made those last odds smaller, but it guarantees to catch no pattern
//! beyond a single changed byte. And the `crc32c` crate computes it with the CPU's instruction
//! (SSE 4.2, ARMv8 CRC), so an entry costs less to checksum than with FNV-1a's byte-by-byte
//! multiply, whatever its size.

/// A row's fields, all but its run's id, as stored.
#[derive(Debug, Clone, Copy)]
pub(super) enum Fields<'a> {
    /// A journal entry.
    Entry {
        seq: u64,
        step: &'a str,
        kind: &'a str,
        attempt: u32,
        payload: &'a str,
        at: u64,
    },
    /// An inbox message.
    Message {
        seq: u64,
        kind: &'a str,
        name: &'a str,
        payload: &'a str,
        at: u64,
    },
    /// A run's input, output or error.
    Text(&'a str),
}

impl Fields<'_> {
    /// The CRC-32C this version stores for the row (see the module docs for what it covers).
    pub(super) fn crc32c(self) -> i64 {
        let crc = match self {
            Fields::Entry {
                seq,
                step,
                kind,
                attempt,
                payload,
                at,
            } => framed(
                &[
                    seq,
                    u64::from(attempt),
                    at,
                    len(step),
                    len(kind),
                    len(payload),
                ],
                &[step, kind, payload],
            ),
            Fields::Message {
                seq,
                kind,
                name,
                payload,
                at,
            } => framed(
                &[seq, at, len(kind), len(name), len(payload)],
                &[kind, name, payload],
            ),
            Fields::Text(text) => crc32c::crc32c(text.as_bytes()),
        };
        i64::from(crc)
    }

    /// The 64-bit FNV-1a that schema versions 3 to 7 stored for the row: every field in the
    /// order of the row's columns, each followed by a separator. Only read, never written.
    fn fnv1a(self) -> i64 {
        match self {
            Fields::Entry {
                seq,
                step,
                kind,
                attempt,
                payload,
                at,
            } => fnv1a(&[
                &seq.to_le_bytes(),
                step.as_bytes(),
                kind.as_bytes(),
                &attempt.to_le_bytes(),
                payload.as_bytes(),
                &at.to_le_bytes(),
            ]),
            Fields::Message {
                seq,
                kind,
                name,
                payload,
                at,
            } => fnv1a(&[
                &seq.to_le_bytes(),
                kind.as_bytes(),
                name.as_bytes(),
                payload.as_bytes(),
                &at.to_le_bytes(),
            ]),
            Fields::Text(text) => fnv1a(&[text.as_bytes()]),
        }
    }
}

/// The checksums a row carries, as stored: each column is `None` where the row has none.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Stored {
    /// The `crc32c` column (rows written by schema version 8 on).
    pub crc32c: Option<i64>,
    /// The `checksum` column: FNV-1a (rows written by versions 3 to 7).
    pub fnv1a: Option<i64>,
}

impl Stored {
    /// Whether every checksum the row carries matches `fields` (a row with none does).
    pub(super) fn matches(self, fields: Fields<'_>) -> bool {
        self.crc32c.is_none_or(|sum| sum == fields.crc32c())
            && self.fnv1a.is_none_or(|sum| sum == fields.fnv1a())
    }
}

/// A text's length as framed.
fn len(text: &str) -> u64 {
    text.len() as u64
}

/// CRC-32C of the little-endian `numbers` (at most 6), then of each of `texts`: one pass of
/// the CPU's instruction over a 48-byte head and one over each text, nothing copied.
fn framed(numbers: &[u64], texts: &[&str]) -> u32 {
    let mut head = [0u8; 48];
    for (slot, n) in head.chunks_exact_mut(8).zip(numbers) {
        slot.copy_from_slice(&n.to_le_bytes());
    }
    debug_assert!(numbers.len() <= 6, "a head of {} numbers", numbers.len());
    let crc = crc32c::crc32c(&head[..numbers.len() * 8]);
    texts
        .iter()
        .fold(crc, |crc, text| crc32c::crc32c_append(crc, text.as_bytes()))
}

/// 64-bit FNV-1a over `fields`, each followed by a separator.
fn fnv1a(fields: &[&[u8]]) -> i64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for field in fields {
        for &b in *field {
            hash = (hash ^ u64::from(b)).wrapping_mul(PRIME);
        }
        // A separator, so that bytes cannot move from one field to the next unnoticed.
        hash = (hash ^ 0xff).wrapping_mul(PRIME);
    }
    hash as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(step: &'a str, kind: &'a str, payload: &'a str) -> Fields<'a> {
        Fields::Entry {
            seq: 3,
            step,
            kind,
            attempt: 1,
            payload,
            at: 1_700_000_000_000,
        }
    }

    #[test]
    fn the_crc_is_castagnolis_and_covers_the_documented_bytes() {
        // The check value of CRC-32C (the catalogue's `CRC-32/ISCSI`): the crate computes
        // Castagnoli's polynomial, not another CRC-32's.
        assert_eq!(Fields::Text("123456789").crc32c(), 0xE306_9283);
        let mut bytes = Vec::new();
        for n in [3u64, 1, 1_700_000_000_000, 1, 4, 4] {
            bytes.extend_from_slice(&n.to_le_bytes());
        }
        bytes.extend_from_slice(b"sdonetrue");
        let expected = i64::from(crc32c::crc32c(&bytes));
        assert_eq!(entry("s", "done", "true").crc32c(), expected);
        let mut bytes = Vec::new();
        for n in [2u64, 9, 6, 2, 3] {
            bytes.extend_from_slice(&n.to_le_bytes());
        }
        bytes.extend_from_slice(b"signalgo\"a\"");
        let message = Fields::Message {
            seq: 2,
            kind: "signal",
            name: "go",
            payload: "\"a\"",
            at: 9,
        };
        assert_eq!(message.crc32c(), i64::from(crc32c::crc32c(&bytes)));
    }

    #[test]
    fn bytes_moved_between_fields_or_any_field_changed_do_not_match() {
        let sum = Stored {
            crc32c: Some(entry("ab", "c", "x").crc32c()),
            fnv1a: None,
        };
        assert!(sum.matches(entry("ab", "c", "x")));
        assert!(!sum.matches(entry("a", "bc", "x")));
        assert!(!sum.matches(entry("ab", "", "cx")));
        assert!(!sum.matches(entry("ab", "c", "y")));
        let Fields::Entry {
            step,
            kind,
            payload,
            ..
        } = entry("ab", "c", "x")
        else {
            unreachable!()
        };
        for changed in [
            Fields::Entry {
                seq: 4,
                step,
                kind,
                attempt: 1,
                payload,
                at: 1_700_000_000_000,
            },
            Fields::Entry {
                seq: 3,
                step,
                kind,
                attempt: 2,
                payload,
                at: 1_700_000_000_000,
            },
            Fields::Entry {
                seq: 3,
                step,
                kind,
                attempt: 1,
                payload,
                at: 1_700_000_000_001,
            },
        ] {
            assert!(!sum.matches(changed), "{changed:?}");
        }
    }

    #[test]
    fn a_row_is_checked_by_every_checksum_it_carries_and_rows_without_are_read() {
        let fields = entry("s", "done", "{\"n\":7}");
        let changed = entry("s", "done", "{\"n\":8}");
        // Written by this version: CRC-32C alone.
        let new = Stored {
            crc32c: Some(fields.crc32c()),
            fnv1a: None,
        };
        // Written by versions 3 to 7: FNV-1a alone, as they computed it (a value from the
        // fixture `checksums_v7.db` pins the old function byte for byte).
        let old = Stored {
            crc32c: None,
            fnv1a: Some(fields.fnv1a()),
        };
        for sum in [new, old] {
            assert!(sum.matches(fields), "{sum:?}");
            assert!(!sum.matches(changed), "{sum:?}");
        }
        assert!(
            Stored::default().matches(changed),
            "rows from before checksums"
        );
        // A checksum in the wrong column is not taken for the other algorithm.
        let swapped = Stored {
            crc32c: old.fnv1a,
            fnv1a: None,
        };
        assert!(!swapped.matches(fields));
        assert_eq!(
            Fields::Text("{\"order\":0}").fnv1a(),
            5_885_789_573_461_729_716,
            "fnv-done's input_checksum in tests/fixtures/checksums_v7.db"
        );
    }
}
