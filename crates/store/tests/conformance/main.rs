//! One suite, two backends: every test in `rows.rs` and `reads.rs` runs against SQLite and
//! against PostgreSQL (`LEGACYGPU_TEST_POSTGRES`; skipped loudly without a
//! server, failed in CI where `LEGACYGPU_REQUIRE_POSTGRES=1`). `lease.rs`
//! is PostgreSQL's alone: election and fencing.

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// For each `name`, a module with `sqlite` and `postgres` tests calling
/// `name(&Backend)`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name(&crate::support::Backend::sqlite());
                }

                #[test]
                fn postgres() {
                    if let Some(backend) = crate::support::Backend::postgres() {
                        super::$name(&backend);
                    }
                }
            }
        )*
    };
}

mod lease;
mod reads;
mod rows;
mod support;
