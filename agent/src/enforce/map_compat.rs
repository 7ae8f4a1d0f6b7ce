//! Refuses to load programs against pinned maps of another shape.
//!
//! aya reuses whatever map is pinned under a name without comparing it with the object's
//! definition. If an older agent pinned TASK_DOMAIN with a smaller value, the new programs
//! would be loaded against it and either fail verification half-way through an upgrade or,
//! worse, read live labels with the wrong layout. So before anything is loaded the pinned maps
//! are compared with the object, and a mismatch stops the agent with the old programs still
//! enforcing.

use std::path::Path;

use anyhow::{Context, bail};
use aya::maps::MapInfo;

use super::pins::{PINNED_MAPS, PinDir};

/// The parts of a map definition that the programs depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapShape {
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// Human-readable differences between what the programs need and what is pinned.
pub fn differences(needed: MapShape, pinned: MapShape) -> Vec<String> {
    let mut found = Vec::new();
    for (what, need, have) in [
        ("key size", needed.key_size, pinned.key_size),
        ("value size", needed.value_size, pinned.value_size),
        ("max entries", needed.max_entries, pinned.max_entries),
    ] {
        if need != have {
            found.push(format!("{what} {have}, these programs need {need}"));
        }
    }
    found
}

/// Checks every pinned map that exists against the object's definition of it, and that none
/// is missing under programs that are attached.
pub fn check_pinned(object: &[u8], pins: &PinDir) -> anyhow::Result<()> {
    let parsed = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
    let attached = !pins.generations()?.is_empty();
    for name in PINNED_MAPS {
        let path = pins.map(name);
        if !path.exists() {
            // Programs attached without this map were loaded by a version that kept the state
            // elsewhere (or not at all); taking over from them would lose it.
            if attached && pins.has_pinned_maps() {
                bail!("{}", missing_under_attached(&path));
            }
            continue;
        }
        let definition = parsed
            .maps
            .get(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))?;
        let needed = MapShape {
            key_size: definition.key_size(),
            value_size: definition.value_size(),
            max_entries: definition.max_entries(),
        };
        let pinned = pinned_shape(&path)?;
        let found = differences(needed, pinned);
        if !found.is_empty() {
            bail!(
                "the pinned map {} was made by an incompatible bulkhead version ({}); the \
                 programs already attached keep enforcing. To replace them, run `bulkhead \
                 uninstall` (this forgets every live domain, so stop the tasks first) and start \
                 the agent again",
                path.display(),
                found.join("; ")
            );
        }
    }
    Ok(())
}

fn missing_under_attached(path: &Path) -> String {
    format!(
        "the programs attached now were loaded by a bulkhead version that did not pin {}; \
         they keep enforcing. To replace them, run `bulkhead uninstall` (this forgets every \
         live domain, so stop the tasks first) and start the agent again",
        path.display()
    )
}

fn pinned_shape(path: &Path) -> anyhow::Result<MapShape> {
    let info = MapInfo::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(MapShape {
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: MapShape = MapShape {
        key_size: 4,
        value_size: 16,
        max_entries: 0,
    };

    #[test]
    fn the_same_shape_has_no_differences() {
        assert!(differences(LABEL, LABEL).is_empty());
    }

    #[test]
    fn every_difference_is_named() {
        let old = MapShape {
            value_size: 8,
            max_entries: 1,
            ..LABEL
        };
        assert_eq!(
            differences(LABEL, old),
            [
                "value size 8, these programs need 16",
                "max entries 1, these programs need 0"
            ]
        );
    }

    #[test]
    fn every_pinned_map_is_defined_by_the_object() {
        let parsed = aya_obj::Object::parse(super::super::EBPF_OBJECT).unwrap();
        for name in PINNED_MAPS {
            assert!(parsed.maps.contains_key(name), "{name}");
        }
    }

    /// Attached programs whose version did not pin a map these programs keep state in (here
    /// COUNTED_TASKS, added after the first release of the pin layout): refused, naming it.
    #[test]
    fn a_map_missing_under_attached_programs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pins = PinDir::new(&dir.path().join("bulkhead"));
        for sub in ["maps", "links"] {
            std::fs::create_dir_all(pins.root().join(sub)).unwrap();
        }
        pins.new_generation().unwrap();
        let present = bulkhead_common::lifecycle::DOMAIN_EVENTS_MAP;
        std::fs::write(pins.map(present), "").unwrap();
        for name in PINNED_MAPS.iter().filter(|name| **name != present) {
            let _ = std::fs::remove_file(pins.map(name));
        }
        let err = check_pinned(super::super::EBPF_OBJECT, &pins)
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not pin"), "{err}");
        assert!(err.contains("bulkhead uninstall"), "{err}");
    }

    #[test]
    fn nothing_pinned_and_nothing_attached_is_a_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let pins = PinDir::new(&dir.path().join("bulkhead"));
        std::fs::create_dir_all(pins.root().join("maps")).unwrap();
        check_pinned(super::super::EBPF_OBJECT, &pins).unwrap();
    }
}
