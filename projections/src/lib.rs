//! Read models: statements, CDRs, the account directory, replay and verify.
