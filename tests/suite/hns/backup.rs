//! The snapshot-free backup of a lake with a hierarchical namespace.
