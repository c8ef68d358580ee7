//! Deterministic simulation of kvstore clusters, and the checkers that judge
//! what the simulated clients saw.

mod sim;
