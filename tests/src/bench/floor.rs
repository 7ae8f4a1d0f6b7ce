//! The floor: an empty program on every attach point bulkhead uses (ebpf/floor, generated
//! from the same lists the agent attaches from). bulkhead's cost above the floor is its
//! programs' own work; the floor's cost above no programs is the kernel's price for a BPF LSM
//! program on those hooks.

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, Lsm},
};
use bulkhead_common::{LSM_PROGRAMS, lifecycle::TRACE_PROGRAMS};

/// The empty programs, built by tests/build.rs.
static FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bulkhead-floor-ebpf"));

/// Attached empty programs; dropping this detaches them (nothing is pinned).
pub struct Floor {
    _ebpf: Ebpf,
}

/// Loads and attaches the floor. Fails if any hook bulkhead attaches could not get its empty
/// program: a floor on fewer hooks would flatter bulkhead.
pub fn attach() -> Result<Floor, String> {
    let btf = Btf::from_sys_fs().map_err(|err| format!("kernel BTF: {err}"))?;
    let mut ebpf = Ebpf::load(FLOOR_OBJECT).map_err(|err| format!("loading the floor: {err}"))?;
    for (name, tracepoint) in TRACE_PROGRAMS {
        let program: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("floor program {name} missing"))?
            .try_into()
            .map_err(|err| format!("floor program {name}: {err}"))?;
        program
            .load(tracepoint, &btf)
            .and_then(|()| program.attach().map(drop))
            .map_err(|err| format!("floor program {name} at {tracepoint}: {err}"))?;
    }
    for (name, hook) in LSM_PROGRAMS {
        let program: &mut Lsm = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("floor program {name} missing"))?
            .try_into()
            .map_err(|err| format!("floor program {name}: {err}"))?;
        program
            .load(hook, &btf)
            .and_then(|()| program.attach().map(drop))
            .map_err(|err| format!("floor program {name} at {hook}: {err}"))?;
    }
    Ok(Floor { _ebpf: ebpf })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor covers exactly bulkhead's attach points, no fewer and no others.
    #[test]
    fn the_floor_has_one_empty_program_per_attach_point() {
        use object::{Object, ObjectSection};
        let elf = object::File::parse(FLOOR_OBJECT).unwrap();
        let mut sections: Vec<String> = elf
            .sections()
            .filter_map(|section| section.name().ok().map(str::to_owned))
            .filter(|name| name.starts_with("lsm/") || name.starts_with("tp_btf/"))
            .collect();
        sections.sort();
        let mut expected: Vec<String> = LSM_PROGRAMS
            .iter()
            .map(|(_, hook)| format!("lsm/{hook}"))
            .chain(TRACE_PROGRAMS.iter().map(|(_, tp)| format!("tp_btf/{tp}")))
            .collect();
        expected.sort();
        assert_eq!(sections, expected);
    }
}
