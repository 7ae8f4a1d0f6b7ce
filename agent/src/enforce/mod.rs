//! Loads bulkhead's eBPF LSM programs into the kernel and attaches them.

pub mod task_storage;

use anyhow::{Context, anyhow};
use aya::{Btf, Ebpf, EbpfLoader, maps::Map, programs::Lsm};
use aya_log::EbpfLogger;
use bulkhead_common::{LSM_PROGRAMS, TASK_DOMAIN_MAP};

use task_storage::TaskDomainMap;

/// The compiled eBPF object, built from ebpf/programs by agent/build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bulkhead-ebpf"));

/// Loaded and attached programs. Enforcement lasts as long as this value: dropping it detaches
/// every hook.
pub struct Enforcement {
    _ebpf: Ebpf,
    pub hooks: Vec<&'static str>,
    pub kernel_log: Option<EbpfLogger<&'static dyn log::Log>>,
}

impl Enforcement {
    /// Loads and attaches every program; also returns the handle on the domain map.
    pub fn load() -> anyhow::Result<(Self, TaskDomainMap)> {
        let btf = Btf::from_sys_fs().context("reading kernel BTF from /sys/kernel/btf/vmlinux")?;
        let mut ebpf = EbpfLoader::new()
            // TASK_DOMAIN is a task-storage map, which aya 0.14 creates but does not wrap.
            .allow_unsupported_maps()
            .load(EBPF_OBJECT)
            .context("loading the eBPF object into the kernel")?;

        // Kernel-side debug lines are optional: enforcement does not depend on them.
        let kernel_log = match EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(err) => {
                tracing::warn!(error = %err, "eBPF log channel unavailable; kernel-side debug lines will be missing");
                None
            }
        };

        let task_domains = match ebpf.map(TASK_DOMAIN_MAP) {
            Some(Map::Unsupported(data)) => TaskDomainMap::new(
                data.info()
                    .and_then(|info| info.fd())
                    .context("opening the task-storage map")?,
            ),
            Some(_) => return Err(anyhow!("map {TASK_DOMAIN_MAP} has an unexpected type")),
            None => {
                return Err(anyhow!(
                    "map {TASK_DOMAIN_MAP} missing from the eBPF object"
                ));
            }
        };

        // In LSM_PROGRAMS order: task_alloc first, so domains are inherited before any
        // check that relies on them is live.
        let mut hooks = Vec::new();
        for (program_name, hook) in LSM_PROGRAMS {
            let program: &mut Lsm = ebpf
                .program_mut(program_name)
                .ok_or_else(|| anyhow!("program {program_name} missing from the eBPF object"))?
                .try_into()
                .with_context(|| format!("program {program_name} is not an LSM program"))?;
            program.load(hook, &btf).with_context(|| {
                format!("the kernel refused to load {program_name} for hook {hook}")
            })?;
            program
                .attach()
                .with_context(|| format!("attaching {program_name} to LSM hook {hook}"))?;
            hooks.push(*hook);
        }

        let enforcement = Self {
            _ebpf: ebpf,
            hooks,
            kernel_log,
        };
        Ok((enforcement, task_domains))
    }
}
