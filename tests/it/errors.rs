//! SPEC §5: every row of the error table.
