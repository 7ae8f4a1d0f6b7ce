// Present so agent/build.rs can name this crate as a build-dependency; cargo then rebuilds the
// agent whenever the eBPF sources change. The programs themselves are in main.rs.
#![no_std]
