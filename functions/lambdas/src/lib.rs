//! Lambda wiring.
