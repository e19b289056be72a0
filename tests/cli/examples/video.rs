//! examples/video (written next).
