//! Record Access Control Point 0x2A52 (domain.md §1.7): the requests a
//! gateway writes to a glucose meter (or pulse oximeter) and the indications
//! it gets back.
//!
//! Frame: Op Code, Operator, Operand. Only the Sequence Number filter
//! (filter type 1, uint16) is typed; other filter types (User Facing Time)
//! keep their operand bytes. Reserved op codes and operators are rejected:
//! without them the operand cannot be interpreted. Reserved *response
//! codes* are kept ([`ResponseCode::Reserved`]): the frame is still
//! well-formed and the gateway can log the code.

use super::error::{Characteristic, Fault, GattError, GattErrorKind};
use super::reader::{Put, Reader};

/// Filter type of the Sequence Number (GLS).
pub const FILTER_SEQUENCE_NUMBER: u8 = 0x01;

/// A request op code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 1: report stored records (sent as 0x2A18/0x2A34 notifications).
    ReportStoredRecords,
    /// 2: delete stored records.
    DeleteStoredRecords,
    /// 3: abort operation.
    Abort,
    /// 4: report number of stored records.
    ReportNumberOfRecords,
}

impl OpCode {
    /// Wire value.
    pub const fn code(self) -> u8 {
        match self {
            OpCode::ReportStoredRecords => 1,
            OpCode::DeleteStoredRecords => 2,
            OpCode::Abort => 3,
            OpCode::ReportNumberOfRecords => 4,
        }
    }
}

/// Operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// 0 (abort, responses).
    Null,
    /// 1
    AllRecords,
    /// 2
    LessThanOrEqual,
    /// 3 (there is no "greater than": ask for ≥ last seen + 1).
    GreaterThanOrEqual,
    /// 4: inclusive.
    WithinRange,
    /// 5: oldest.
    FirstRecord,
    /// 6: most recent.
    LastRecord,
}

impl Operator {
    /// Wire value.
    pub const fn code(self) -> u8 {
        match self {
            Operator::Null => 0,
            Operator::AllRecords => 1,
            Operator::LessThanOrEqual => 2,
            Operator::GreaterThanOrEqual => 3,
            Operator::WithinRange => 4,
            Operator::FirstRecord => 5,
            Operator::LastRecord => 6,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Operator::Null,
            1 => Operator::AllRecords,
            2 => Operator::LessThanOrEqual,
            3 => Operator::GreaterThanOrEqual,
            4 => Operator::WithinRange,
            5 => Operator::FirstRecord,
            6 => Operator::LastRecord,
            _ => return None,
        })
    }

    fn takes_operand(self) -> bool {
        matches!(
            self,
            Operator::LessThanOrEqual | Operator::GreaterThanOrEqual | Operator::WithinRange
        )
    }
}

/// The operand of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operand {
    /// No operand (null, all, first, last).
    None,
    /// Sequence-number filter with one value (≤, ≥).
    Sequence(u16),
    /// Sequence-number filter with an inclusive range.
    SequenceRange(u16, u16),
    /// Another filter type, its bytes kept as sent.
    Other {
        /// filter type (2 = user facing time)
        filter_type: u8,
        /// the filter value(s)
        value: Vec<u8>,
    },
}

/// A request written to the RACP.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RacpRequest {
    /// What to do.
    pub op_code: OpCode,
    /// Which records.
    pub operator: Operator,
    /// Filter.
    pub operand: Operand,
}

/// Response code (op code 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseCode {
    /// 1
    Success,
    /// 2
    OpCodeNotSupported,
    /// 3
    InvalidOperator,
    /// 4
    OperatorNotSupported,
    /// 5
    InvalidOperand,
    /// 6: a successful request that matched nothing.
    NoRecordsFound,
    /// 7
    AbortUnsuccessful,
    /// 8
    ProcedureNotCompleted,
    /// 9
    OperandNotSupported,
    /// 0 or 10-255.
    Reserved(u8),
}

impl ResponseCode {
    /// From the wire value.
    pub const fn from_code(c: u8) -> Self {
        use ResponseCode::*;
        match c {
            1 => Success,
            2 => OpCodeNotSupported,
            3 => InvalidOperator,
            4 => OperatorNotSupported,
            5 => InvalidOperand,
            6 => NoRecordsFound,
            7 => AbortUnsuccessful,
            8 => ProcedureNotCompleted,
            9 => OperandNotSupported,
            c => Reserved(c),
        }
    }

    /// Wire value.
    pub const fn code(self) -> u8 {
        use ResponseCode::*;
        match self {
            Success => 1,
            OpCodeNotSupported => 2,
            InvalidOperator => 3,
            OperatorNotSupported => 4,
            InvalidOperand => 5,
            NoRecordsFound => 6,
            AbortUnsuccessful => 7,
            ProcedureNotCompleted => 8,
            OperandNotSupported => 9,
            Reserved(c) => c,
        }
    }

    /// Success, or "no records found" (a success with nothing to send):
    /// the transfer is complete and the cursor may be committed.
    pub const fn is_complete(self) -> bool {
        matches!(self, ResponseCode::Success | ResponseCode::NoRecordsFound)
    }
}

/// Any RACP frame: a request, or one of the two responses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Racp {
    /// Op codes 1-4 (written by the client).
    Request(RacpRequest),
    /// Op code 5: number of stored records.
    NumberOfRecords(u16),
    /// Op code 6: the request with this op code finished with this code.
    Response {
        /// op code of the request
        request_op_code: u8,
        /// outcome
        code: ResponseCode,
    },
}

impl Racp {
    /// `01 01`: report all stored records.
    pub fn report_all() -> Self {
        Racp::Request(RacpRequest {
            op_code: OpCode::ReportStoredRecords,
            operator: Operator::AllRecords,
            operand: Operand::None,
        })
    }

    /// `01 03 01 <seq LE16>`: report records with sequence number ≥ `seq`.
    pub fn report_from(seq: u16) -> Self {
        Racp::Request(RacpRequest {
            op_code: OpCode::ReportStoredRecords,
            operator: Operator::GreaterThanOrEqual,
            operand: Operand::Sequence(seq),
        })
    }

    /// Records newer than the last one seen: `≥ last_seen + 1`; `None` when
    /// `last_seen` is 0xFFFF (nothing can be newer).
    pub fn report_newer_than(last_seen: u16) -> Option<Self> {
        last_seen.checked_add(1).map(Racp::report_from)
    }

    /// `01 04 01 <lo LE16> <hi LE16>`: report records with sequence
    /// numbers from `lo` to `hi`, inclusive.
    pub fn report_range(lo: u16, hi: u16) -> Self {
        Racp::Request(RacpRequest {
            op_code: OpCode::ReportStoredRecords,
            operator: Operator::WithinRange,
            operand: Operand::SequenceRange(lo, hi),
        })
    }

    /// `01 06`: report the last (newest) stored record.
    pub fn report_last() -> Self {
        Racp::Request(RacpRequest {
            op_code: OpCode::ReportStoredRecords,
            operator: Operator::LastRecord,
            operand: Operand::None,
        })
    }

    /// `04 01`: report the number of all stored records.
    pub fn count_all() -> Self {
        Racp::Request(RacpRequest {
            op_code: OpCode::ReportNumberOfRecords,
            operator: Operator::AllRecords,
            operand: Operand::None,
        })
    }

    /// `03 00`: abort the running procedure.
    pub fn abort() -> Self {
        Racp::Request(RacpRequest {
            op_code: OpCode::Abort,
            operator: Operator::Null,
            operand: Operand::None,
        })
    }

    /// Decodes a frame (request or response).
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        Self::decode_inner(bytes).map_err(|f| f.at(Characteristic::RecordAccessControlPoint))
    }

    fn decode_inner(bytes: &[u8]) -> Result<Self, Fault> {
        let mut r = Reader::new(bytes);
        let op = r.u8("op code")?;
        let op_at = 0;
        let operator_at = r.pos();
        let operator_code = r.u8("operator")?;
        let operator = Operator::from_code(operator_code).ok_or_else(|| {
            Fault::new(
                operator_at,
                GattErrorKind::OutOfRange {
                    field: "operator",
                    value: operator_code.into(),
                    expected: "0..=6",
                },
            )
        })?;
        let require_null = |want_null: bool| {
            if (operator == Operator::Null) == want_null {
                Ok(())
            } else {
                let expected = if want_null {
                    "0 (null) for this op code"
                } else {
                    "1..=6 for this op code"
                };
                Err(Fault::new(
                    operator_at,
                    GattErrorKind::OutOfRange {
                        field: "operator",
                        value: operator_code.into(),
                        expected,
                    },
                ))
            }
        };
        let frame = match op {
            1 | 2 | 4 => {
                require_null(false)?;
                let op_code = match op {
                    1 => OpCode::ReportStoredRecords,
                    2 => OpCode::DeleteStoredRecords,
                    _ => OpCode::ReportNumberOfRecords,
                };
                let operand = if operator.takes_operand() {
                    let filter_type = r.u8("filter type")?;
                    match (filter_type, operator) {
                        (FILTER_SEQUENCE_NUMBER, Operator::WithinRange) => Operand::SequenceRange(
                            r.u16("sequence number low")?,
                            r.u16("sequence number high")?,
                        ),
                        (FILTER_SEQUENCE_NUMBER, _) => Operand::Sequence(r.u16("sequence number")?),
                        _ => {
                            let value = r.take(r.remaining(), "filter value")?.to_vec();
                            Operand::Other { filter_type, value }
                        }
                    }
                } else {
                    Operand::None
                };
                Racp::Request(RacpRequest {
                    op_code,
                    operator,
                    operand,
                })
            }
            3 => {
                require_null(true)?;
                Racp::Request(RacpRequest {
                    op_code: OpCode::Abort,
                    operator,
                    operand: Operand::None,
                })
            }
            5 => {
                require_null(true)?;
                Racp::NumberOfRecords(r.u16("number of records")?)
            }
            6 => {
                require_null(true)?;
                let request_op_code = r.u8("request op code")?;
                Racp::Response {
                    request_op_code,
                    code: ResponseCode::from_code(r.u8("response code")?),
                }
            }
            other => {
                return Err(Fault::new(
                    op_at,
                    GattErrorKind::OutOfRange {
                        field: "op code",
                        value: other.into(),
                        expected: "1..=6",
                    },
                ))
            }
        };
        r.finish()?;
        Ok(frame)
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8);
        match self {
            Racp::Request(req) => {
                out.put_u8(req.op_code.code());
                out.put_u8(req.operator.code());
                match &req.operand {
                    Operand::None => {}
                    Operand::Sequence(s) => {
                        out.put_u8(FILTER_SEQUENCE_NUMBER);
                        out.put_u16(*s);
                    }
                    Operand::SequenceRange(lo, hi) => {
                        out.put_u8(FILTER_SEQUENCE_NUMBER);
                        out.put_u16(*lo);
                        out.put_u16(*hi);
                    }
                    Operand::Other { filter_type, value } => {
                        out.put_u8(*filter_type);
                        out.extend_from_slice(value);
                    }
                }
            }
            Racp::NumberOfRecords(n) => {
                out.extend_from_slice(&[5, 0]);
                out.put_u16(*n);
            }
            Racp::Response {
                request_op_code,
                code,
            } => {
                out.extend_from_slice(&[6, 0, *request_op_code, code.code()]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(Racp::report_all().encode(), [0x01, 0x01]);
        assert_eq!(
            Racp::report_newer_than(42).map(|r| r.encode()),
            Some(vec![0x01, 0x03, 0x01, 0x2B, 0x00])
        );
        assert_eq!(Racp::report_newer_than(u16::MAX), None);
        assert_eq!(Racp::count_all().encode(), [0x04, 0x01]);
        assert_eq!(Racp::abort().encode(), [0x03, 0x00]);
        for r in [
            Racp::report_all(),
            Racp::report_from(43),
            Racp::count_all(),
            Racp::abort(),
        ] {
            assert_eq!(Racp::decode(&r.encode()).unwrap(), r);
        }
        let range = Racp::decode(&[0x02, 0x04, 0x01, 1, 0, 9, 0]).unwrap();
        assert_eq!(
            range,
            Racp::Request(RacpRequest {
                op_code: OpCode::DeleteStoredRecords,
                operator: Operator::WithinRange,
                operand: Operand::SequenceRange(1, 9)
            })
        );
    }

    #[test]
    fn responses() {
        let r = Racp::decode(&[0x06, 0x00, 0x01, 0x06]).unwrap();
        assert_eq!(
            r,
            Racp::Response {
                request_op_code: 1,
                code: ResponseCode::NoRecordsFound
            }
        );
        assert!(ResponseCode::NoRecordsFound.is_complete());
        assert_eq!(
            Racp::decode(&[0x05, 0x00, 0x02, 0x01]).unwrap(),
            Racp::NumberOfRecords(258)
        );
        assert_eq!(
            Racp::decode(&[0x06, 0x00, 0x01, 0x20]).unwrap().encode(),
            [0x06, 0x00, 0x01, 0x20]
        );
    }

    #[test]
    fn malformed() {
        assert!(Racp::decode(&[0x07, 0x00]).is_err());
        assert!(Racp::decode(&[0x01, 0x07]).is_err());
        assert!(
            Racp::decode(&[0x01, 0x00]).is_err(),
            "report needs an operator"
        );
        assert!(
            Racp::decode(&[0x05, 0x01, 0, 0]).is_err(),
            "response operator must be null"
        );
        assert!(Racp::decode(&[0x01, 0x01, 0x00]).is_err(), "trailing byte");
        assert!(
            Racp::decode(&[0x01, 0x03, 0x01, 0x00]).is_err(),
            "truncated operand"
        );
        assert!(Racp::decode(&[0x01, 0x03]).is_err(), "missing filter type");
    }
}
