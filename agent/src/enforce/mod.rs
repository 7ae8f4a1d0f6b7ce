//! Loads bulkhead's eBPF LSM programs into the kernel and attaches them.

pub mod domain_census;
pub mod hook_abi;
pub mod hook_prototypes;
pub mod inode_marks;
pub mod kernel_layout;
pub mod local_storage;
pub mod map_compat;
#[cfg(test)]
pub(crate) mod matrix_btf;
pub mod object_patch;
pub mod pins;
pub mod task_storage;

use anyhow::{Context, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, MapFd, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, Lsm, links::FdLink},
};
use aya_log::EbpfLogger;
use bulkhead_common::audit::{
    AUDIT_EVENTS_MAP, AUDIT_LOST_MAP, MODE_AUDIT, MODE_ENFORCE, SETTINGS_MAP,
};
use bulkhead_common::{
    FOWN_FILE_MODE_GLOBAL, FOWN_FILE_OFFSET_GLOBAL, LOOKUP_MAY_FAIL_GLOBAL, LSM_PROGRAMS,
    PROTECTED_INODE_MAP, REACHABLE_SOCKET_MAP, SELEM_SMAP_OFFSET_GLOBAL, SELEM_SNODE_OFFSET_GLOBAL,
    SHM_DEV_GLOBAL, STORAGE_LIST_OFFSET_GLOBAL, TASK_DOMAIN_MAP, USER_NS_LEVEL_OFFSET_GLOBAL,
    hook_abi::HELPER_READ_ARGS,
    lifecycle::{DOMAIN_EVENTS_MAP, DOMAIN_TASKS_MAP, TRACE_PROGRAMS},
    names::{GUARDED_DIR_MAP, NAME_NODES_MAP},
};

use crate::config::{BUILTIN_DEVICES, CharDevice, HandedOverDescriptors, NodeConfig};
use crate::protect::guard::GuardedDirs;
use domain_census::DomainCensus;
use inode_marks::{InodeMarks, NameMaps};
use kernel_layout::KernelLayout;
use object_patch::AlignedObject;
use pins::{Generation, PINNED_MAPS, PinDir};
use task_storage::TaskDomainMap;

/// The compiled eBPF object, built from ebpf/programs by agent/build.rs.
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bulkhead-ebpf"));

/// Loaded, attached and pinned programs. The pins, not this value, keep enforcement alive:
/// the agent can exit or die and every hook stays attached.
pub struct Enforcement {
    _ebpf: Ebpf,
    pub hooks: Vec<&'static str>,
    pub kernel_log: Option<EbpfLogger<&'static dyn log::Log>>,
    /// Maps and domains taken over from an earlier agent.
    pub adopted: bool,
    /// Link generations of earlier agents that this one replaced.
    pub replaced_generations: usize,
}

/// The maps the rest of the agent reads and writes.
pub struct EnforcementMaps {
    pub task_domains: TaskDomainMap,
    pub protected_inodes: InodeMarks,
    pub reachable_sockets: InodeMarks,
    pub audit_events: RingBuf<MapData>,
    pub audit_lost: PerCpuArray<MapData, u64>,
    pub settings: Settings,
    pub domain_census: DomainCensus,
    pub domain_events: RingBuf<MapData>,
    /// The protected names' trie in the kernel and the directories guarded for it.
    pub guarded_dirs: GuardedDirs,
}

/// The node's mode, in the SETTINGS map the programs read on every refusal.
pub struct Settings {
    map: Array<MapData, u64>,
}

impl Settings {
    pub fn set_mode(&mut self, mode: crate::config::Mode) -> anyhow::Result<()> {
        let value = match mode {
            crate::config::Mode::Enforce => MODE_ENFORCE,
            crate::config::Mode::Audit => MODE_AUDIT,
        };
        self.map
            .set(0, value, 0)
            .context("writing the mode into the SETTINGS map")
    }
}

/// Takes a map of the loaded object out as its aya type.
fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<T>
where
    T: TryFrom<Map>,
    <T as TryFrom<Map>>::Error: std::error::Error + Send + Sync + 'static,
{
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?
        .try_into()
        .with_context(|| format!("map {name} has an unexpected type"))
}

impl Enforcement {
    /// Loads every program against the pinned maps (creating them on first start), attaches
    /// and pins a new generation of links, then removes older generations. If anything fails
    /// before the new generation is complete, the new links are removed again and the old
    /// generation keeps enforcing: nothing is left half-applied.
    pub fn load(pins: &PinDir, config: &NodeConfig) -> anyhow::Result<(Self, EnforcementMaps)> {
        let btf = Btf::from_sys_fs().context("reading kernel BTF from /sys/kernel/btf/vmlinux")?;
        let kernel_btf = btf_rs::Btf::from_file(kernel_layout::KERNEL_BTF)
            .with_context(|| format!("reading kernel BTF {}", kernel_layout::KERNEL_BTF))?;
        // Everything the programs need from this kernel is found before anything changes.
        let slots = hook_abi::resolve(&hook_abi::prototypes_from_btf(&kernel_btf)?)?;
        for prototype in &slots.untested {
            tracing::warn!(
                hook = %prototype.hook,
                prototype = %prototype,
                "hook prototype not among the tested kernels'; its arguments were found by type and name"
            );
        }
        let layout = KernelLayout::from_btf(&kernel_btf)?;
        tracing::debug!(?layout, slots = ?slots.slots, "kernel layout and hook argument slots from BTF");
        let mut object = AlignedObject::new(EBPF_OBJECT);
        // Arguments first: a field offset patched in could otherwise fall in their range.
        object.patch_hook_args(&slots)?;
        object.patch_field_loads(&layout)?;

        let shm_dev = shared_memory_device()?;
        // Arguments the programs read with bpf_get_func_arg get their slot through a global.
        let helper_slots: Vec<u64> = slots.slots.iter().map(|slot| u64::from(*slot)).collect();

        pins.prepare()?;
        map_compat::check_pinned(object.bytes(), pins)?;
        let adopted = pins.has_pinned_maps();
        let owner_records_uncounted = pins.map(bulkhead_common::FILE_OWNER_MAP).exists()
            && !pins.map(bulkhead_common::FILE_OWNER_COUNT_MAP).exists();
        let previous = pins.generations()?;
        let mut loader = EbpfLoader::new();
        for name in PINNED_MAPS {
            loader.map_pin_path(name, pins.map(name));
        }
        for (id, global) in HELPER_READ_ARGS {
            loader.override_global(global, &helper_slots[*id as usize], true);
        }
        let mut ebpf = loader
            // The task- and socket-storage maps, which aya 0.14 creates but does not wrap.
            .allow_unsupported_maps()
            .override_global(FOWN_FILE_MODE_GLOBAL, &layout.fown_file.mode, true)
            .override_global(FOWN_FILE_OFFSET_GLOBAL, &layout.fown_file.offset, true)
            .override_global(USER_NS_LEVEL_OFFSET_GLOBAL, &layout.user_ns_level, true)
            .override_global(
                bulkhead_common::HANDED_OVER_DESCRIPTORS_GLOBAL,
                &u64::from(config.protect.handed_over_descriptors == HandedOverDescriptors::Allow),
                true,
            )
            .override_global("PROC_INODE_PID_BACK", &layout.proc_inode_pid_back, true)
            .override_global(STORAGE_LIST_OFFSET_GLOBAL, &layout.storage.list, true)
            .override_global(SELEM_SNODE_OFFSET_GLOBAL, &layout.storage.snode, true)
            .override_global(SELEM_SMAP_OFFSET_GLOBAL, &layout.storage.smap, true)
            .override_global(
                LOOKUP_MAY_FAIL_GLOBAL,
                &u64::from(layout.lookup_may_fail),
                true,
            )
            .override_global("TASK_PID_OFFSET", &layout.describe.task_pid, true)
            .override_global("TASK_TGID_OFFSET", &layout.describe.task_tgid, true)
            .override_global("TASK_COMM_OFFSET", &layout.describe.task_comm, true)
            .override_global("INODE_INO_OFFSET", &layout.describe.inode_ino, true)
            .override_global("INODE_SB_OFFSET", &layout.describe.inode_sb, true)
            .override_global("SB_DEV_OFFSET", &layout.describe.sb_dev, true)
            .override_global("IPC_ID_OFFSET", &layout.describe.ipc_id, true)
            .override_global("IPC_KEY_OFFSET", &layout.describe.ipc_key, true)
            .override_global("KEY_SERIAL_OFFSET", &layout.describe.key_serial, true)
            .override_global(SHM_DEV_GLOBAL, &shm_dev, true)
            .override_global("UNIX_SOCK_ADDR_OFFSET", &layout.describe.unix_addr, true)
            .override_global(
                "UNIX_ADDRESS_PATH_OFFSET",
                &layout.describe.unix_address_path,
                true,
            )
            .load(object.bytes())
            .context("loading the eBPF object into the kernel")?;

        // Kernel-side debug lines are optional: enforcement does not depend on them.
        let kernel_log = match EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(err) => {
                tracing::warn!(error = %err, "eBPF log channel unavailable; kernel-side debug lines will be missing");
                None
            }
        };

        let maps = EnforcementMaps {
            task_domains: TaskDomainMap::new(local_storage_map(&ebpf, TASK_DOMAIN_MAP)?),
            protected_inodes: InodeMarks::protected(take_map(&mut ebpf, PROTECTED_INODE_MAP)?),
            reachable_sockets: InodeMarks::reachable(take_map(&mut ebpf, REACHABLE_SOCKET_MAP)?),
            audit_events: take_map(&mut ebpf, AUDIT_EVENTS_MAP)?,
            audit_lost: take_map(&mut ebpf, AUDIT_LOST_MAP)?,
            settings: Settings {
                map: take_map(&mut ebpf, SETTINGS_MAP)?,
            },
            domain_census: DomainCensus::new(take_map(&mut ebpf, DOMAIN_TASKS_MAP)?),
            domain_events: take_map(&mut ebpf, DOMAIN_EVENTS_MAP)?,
            guarded_dirs: guard_existing_dirs(&mut ebpf, &config.protected_patterns())?,
        };

        allow_devices(&mut ebpf, &config.devices.allow)?;
        if owner_records_uncounted {
            count_adopted_file_owners(&mut ebpf)?;
        }

        let generation = pins.new_generation()?;
        let hooks = match attach_and_pin(&mut ebpf, &btf, &generation) {
            Ok(hooks) => hooks,
            Err(err) => {
                if let Err(cleanup) = generation.remove() {
                    tracing::error!(error = format!("{cleanup:#}"), generation = %generation.dir().display(), "could not remove the incomplete link generation");
                }
                return Err(err);
            }
        };
        // Only now, with every hook covered by the new generation, do the old ones go.
        let mut replaced_generations = 0;
        for old in previous {
            old.remove().with_context(|| {
                format!("detaching the previous generation {}", old.dir().display())
            })?;
            replaced_generations += 1;
        }

        let enforcement = Self {
            _ebpf: ebpf,
            hooks,
            kernel_log,
            adopted,
            replaced_generations,
        };
        Ok((enforcement, maps))
    }
}

/// Writes the protected names' trie and guards the directories on its way before any program
/// is attached, so the new generation judges new names from its first moment.
fn guard_existing_dirs(ebpf: &mut Ebpf, patterns: &[String]) -> anyhow::Result<GuardedDirs> {
    let maps = NameMaps {
        nodes: take_map(ebpf, NAME_NODES_MAP)?,
        guarded: take_map(ebpf, GUARDED_DIR_MAP)?,
    };
    let mut guarded = GuardedDirs::new(patterns, Box::new(maps))?;
    let count = guarded
        .refresh()
        .context("guarding the directories on the protected paths' way")?;
    tracing::debug!(
        directories = count,
        "directories on the protected paths guarded"
    );
    Ok(guarded)
}

/// FILE_OWNER records adopted without their count (pins left by an agent whose programs are
/// gone, with the count's pin removed): a count of zero would make the programs skip deleting
/// a freed file's record, and a later file at the same address would inherit it. The count is
/// only ever an upper bound, so it starts far above any number of records (the map holds
/// FILE_OWNER_MAP_ENTRIES), which costs one hash delete per freed file until the next
/// first start.
fn count_adopted_file_owners(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let map = ebpf
        .map_mut(bulkhead_common::FILE_OWNER_COUNT_MAP)
        .ok_or_else(|| anyhow!("map FILE_OWNER_COUNT missing from the eBPF object"))?;
    let mut count: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(map).context("map FILE_OWNER_COUNT has an unexpected type")?;
    count
        .set(0, u64::MAX / 2, 0)
        .context("raising the adopted FILE_OWNER records' count")?;
    tracing::warn!(
        "FILE_OWNER was pinned without its count; file frees now always look for a record to delete"
    );
    Ok(())
}

/// Fills DEVICE_ALLOWED with the built-in harmless devices and `[devices] allow`, before any
/// program is attached: programs with an empty list would refuse `/dev/null` to every task in
/// a domain. (The map is this generation's own, so a reload does not change it.)
fn allow_devices(ebpf: &mut Ebpf, devices: &[CharDevice]) -> anyhow::Result<()> {
    let map = ebpf
        .map_mut(bulkhead_common::DEVICE_ALLOWED_MAP)
        .ok_or_else(|| anyhow!("map DEVICE_ALLOWED missing from the eBPF object"))?;
    let mut allowed: aya::maps::HashMap<_, u32, u8> =
        aya::maps::HashMap::try_from(map).context("DEVICE_ALLOWED has an unexpected type")?;
    for device in BUILTIN_DEVICES.iter().chain(devices) {
        allowed
            .insert(device.map_key(), 1, 0)
            .with_context(|| format!("allowing character device {device:?} to domains"))?;
    }
    Ok(())
}

/// Loads, attaches and pins every program: first the exit tracepoint and then the LSM hooks in
/// LSM_PROGRAMS order (task_free, then task_alloc), so every count is given only once both
/// places that take it back are live, and domains are inherited before any check that relies
/// on them is live. Returns the names of the LSM hooks.
fn attach_and_pin(
    ebpf: &mut Ebpf,
    btf: &Btf,
    generation: &Generation,
) -> anyhow::Result<Vec<&'static str>> {
    for (program_name, tracepoint) in TRACE_PROGRAMS {
        let program: &mut BtfTracePoint = program_of(ebpf, program_name)?;
        let link = attach_to(program, program_name, tracepoint, btf)?;
        pin_link(link, &generation.link(tracepoint))?;
    }
    let mut hooks = Vec::new();
    for (program_name, hook) in LSM_PROGRAMS {
        let program: &mut Lsm = program_of(ebpf, program_name)?;
        let link = attach_to(program, program_name, hook, btf)?;
        pin_link(link, &generation.link(hook))?;
        hooks.push(*hook);
    }
    Ok(hooks)
}

fn program_of<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
        .try_into()
        .map_err(|_| anyhow!("program {name} has an unexpected type"))
}

/// The two kinds of program bulkhead attaches by BTF name.
trait BtfAttach {
    fn load_attach(&mut self, target: &str, btf: &Btf) -> anyhow::Result<FdLink>;
}

impl BtfAttach for Lsm {
    fn load_attach(&mut self, hook: &str, btf: &Btf) -> anyhow::Result<FdLink> {
        self.load(hook, btf)?;
        let id = self.attach()?;
        Ok(self.take_link(id)?.into())
    }
}

impl BtfAttach for BtfTracePoint {
    fn load_attach(&mut self, tracepoint: &str, btf: &Btf) -> anyhow::Result<FdLink> {
        self.load(tracepoint, btf)?;
        let id = self.attach()?;
        Ok(self.take_link(id)?.into())
    }
}

fn attach_to(
    program: &mut impl BtfAttach,
    program_name: &str,
    target: &str,
    btf: &Btf,
) -> anyhow::Result<FdLink> {
    program
        .load_attach(target, btf)
        .with_context(|| format!("the kernel refused to load or attach {program_name} at {target}"))
}

fn pin_link(link: FdLink, path: &std::path::Path) -> anyhow::Result<()> {
    link.pin(path)
        .with_context(|| format!("pinning {}", path.display()))?;
    Ok(())
}

/// Where POSIX shared memory lives on this node.
pub const SHARED_MEMORY_DIR: &str = "/dev/shm";

/// The kernel's `dev_t` of the tmpfs at /dev/shm (its superblock's `s_dev`, what the programs
/// compare), or 0 when there is none there: then only message queues are judged, and the agent
/// says so.
fn shared_memory_device() -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let path = std::path::Path::new(SHARED_MEMORY_DIR);
    let fs = match nix::sys::statfs::statfs(path) {
        Ok(fs) => fs,
        Err(err) => {
            tracing::warn!(path = SHARED_MEMORY_DIR, error = %err, "no POSIX shared memory filesystem; shm_open files are not judged");
            return Ok(0);
        }
    };
    if fs.filesystem_type().0 as i64 != TMPFS_MAGIC {
        tracing::warn!(
            path = SHARED_MEMORY_DIR,
            "not a tmpfs; shm_open files are not judged"
        );
        return Ok(0);
    }
    let dev = std::fs::metadata(path)
        .with_context(|| format!("reading {SHARED_MEMORY_DIR}"))?
        .dev();
    // Userspace's encoding of a device number differs from the kernel's MKDEV (major << 20).
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    Ok((major << 20) | minor)
}

/// A fresh fd on the task-storage map of the loaded object.
fn local_storage_map(ebpf: &Ebpf, name: &str) -> anyhow::Result<MapFd> {
    match ebpf.map(name) {
        Some(Map::Unsupported(data)) => data
            .info()
            .and_then(|info| info.fd())
            .with_context(|| format!("opening the local-storage map {name}")),
        Some(_) => Err(anyhow!("map {name} has an unexpected type")),
        None => Err(anyhow!("map {name} missing from the eBPF object")),
    }
}
