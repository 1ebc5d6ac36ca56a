//! A row's physical address (`ctid`): block number and line pointer.
//!
//! A claim returns the address of each row it leased, and the completion
//! finds the row again by that address (a TID scan) instead of descending
//! the primary key: measured, this removes about a sixth of the database's
//! work per job. An address is only a hint: any update of the row (progress,
//! a cancel request) moves it, so statements that use it always check the
//! job's id, attempt and lease owner too, and look up by id whatever was
//! not found by address.

use std::error::Error;

use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

/// `(block, offset)`, as PostgreSQL's `tid` type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tid {
    pub block: u32,
    pub offset: u16,
}

impl<'a> FromSql<'a> for Tid {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Tid, Box<dyn Error + Sync + Send>> {
        let bytes: [u8; 6] = raw.try_into().map_err(|_| "a tid is 6 bytes")?;
        Ok(Tid {
            block: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            offset: u16::from_be_bytes([bytes[4], bytes[5]]),
        })
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TID
    }
}

impl ToSql for Tid {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(&self.block.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TID
    }

    to_sql_checked!();
}
