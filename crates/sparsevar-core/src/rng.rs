//! Seeded random numbers.
