//! Rendering merged policies into Corefile text. (Being written.)
