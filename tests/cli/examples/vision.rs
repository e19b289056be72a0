//! examples/vision (written next).
