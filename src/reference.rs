//! CPU reference of PLT-SPEC.
