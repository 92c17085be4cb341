//! The `rpm-gateway` binary: a thin shell over the library (see `cli`).
//!
//! It also chooses the process's allocator. With glibc's, a drain after an
//! outage left the gateway at two to three times its live heap: memory freed
//! by one thread stays in that thread's arena, and a home box has little to
//! spare. jemalloc with one arena, thread caches for small sizes only and
//! dirty pages returned after half a second holds the same drain at about
//! half the resident memory, and runs it faster (docs/benchmarks.md, "Memory
//! through a drain"). It replaces `malloc` for the whole process, so
//! SQLite's page caches live in it too. An operator can override the
//! settings with `MALLOC_CONF` (for instance more arenas on a many-core hub:
//! docs/operations.md, "Memory on a small box").

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod allocator {
    #[global_allocator]
    static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

    /// jemalloc's compiled-in options (a C string it reads at start-up;
    /// `MALLOC_CONF` in the environment is applied after it).
    #[allow(non_upper_case_globals)]
    #[export_name = "malloc_conf"]
    static malloc_conf: &[u8; 62] =
        b"narenas:1,tcache_max:4096,dirty_decay_ms:500,muzzy_decay_ms:0\0";
}

fn main() -> std::process::ExitCode {
    rpm_gateway::main()
}
