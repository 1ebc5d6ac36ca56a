//! A deployment's schema: every drove table lives in one Postgres schema, so
//! several deployments (prod and staging) can share a database. SQL in this
//! crate is written with a `{s}` placeholder that [`Schema::sql`] fills in.

use crate::error::{Error, Result};

/// The schema used when none is configured.
pub const DEFAULT_SCHEMA: &str = "drove";

/// A validated schema name, with the identifiers derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    name: String,
    quoted: String,
}

impl Schema {
    /// Accepts lower-case identifiers (`[a-z_][a-z0-9_]*`, at most 48 bytes so
    /// the derived channel names stay within Postgres's 63-byte limit).
    pub fn new(name: &str) -> Result<Schema> {
        let ok = !name.is_empty()
            && name.len() <= 48
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !name.starts_with("pg_");
        if !ok {
            return Err(Error::Invalid {
                what: "schema name",
                value: name.to_string(),
                reason: "use lower-case letters, digits and '_' (at most 48, not starting with a digit or pg_)",
            });
        }
        Ok(Schema {
            name: name.to_string(),
            quoted: format!("\"{name}\""),
        })
    }

    /// The bare schema name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renders a SQL template: `{s}` becomes the quoted schema name, and
    /// `{jobs_chan}` / `{cancel_chan}` the NOTIFY channel names (safe to embed
    /// as literals: the name is validated to `[a-z0-9_]`).
    pub fn sql(&self, template: &str) -> String {
        template
            .replace("{s}", &self.quoted)
            .replace("{jobs_chan}", &self.jobs_channel())
            .replace("{cancel_chan}", &self.cancel_channel())
    }

    /// NOTIFY channel that announces newly available jobs (payload: queue name).
    pub fn jobs_channel(&self) -> String {
        format!("drove_{}_jobs", self.name)
    }

    /// NOTIFY channel that announces cancel requests (payload: `worker_id job_id`).
    pub fn cancel_channel(&self) -> String {
        format!("drove_{}_cancel", self.name)
    }

    /// Key of the advisory locks taken by migrations and leadership in this schema.
    pub fn lock_key(&self, purpose: &str) -> i64 {
        // FNV-1a: stable across versions and platforms, unlike `DefaultHasher`.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.name.bytes().chain([b'/']).chain(purpose.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h as i64
    }
}

impl Default for Schema {
    fn default() -> Self {
        Schema::new(DEFAULT_SCHEMA).expect("the default schema name is valid")
    }
}

impl std::fmt::Display for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl std::str::FromStr for Schema {
    type Err = Error;
    fn from_str(s: &str) -> Result<Schema> {
        Schema::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_identifiers_and_rejects_injection() {
        assert!(Schema::new("drove_staging").is_ok());
        for bad in [
            "",
            "Prod",
            "a-b",
            "x\"; drop table jobs; --",
            "1abc",
            "pg_temp",
            &"a".repeat(49),
        ] {
            assert!(Schema::new(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn renders_and_derives_names() {
        let s = Schema::new("staging").unwrap();
        assert_eq!(
            s.sql("SELECT * FROM {s}.jobs"),
            "SELECT * FROM \"staging\".jobs"
        );
        assert_eq!(s.jobs_channel(), "drove_staging_jobs");
        assert_ne!(
            s.lock_key("migrate"),
            Schema::new("prod").unwrap().lock_key("migrate")
        );
        assert_ne!(s.lock_key("migrate"), s.lock_key("leader"));
    }
}
