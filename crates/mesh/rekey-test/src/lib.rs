//! Holds only the long-lived-stream rekey test; see .
