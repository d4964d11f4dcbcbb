//! Vivaldi network coordinates, as Serf computes them.
