//! Random model directories (`plt init`).
