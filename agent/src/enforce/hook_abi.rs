//! Finds, in each hook's prototype on the running kernel, the context slot of every argument
//! the programs read (bulkhead_common::hook_abi::HOOK_ARGS): a struct pointer by its type,
//! and by name where the type repeats; an integer by its name (and integer type), since any
//! integer would pass for another. The verdict of the LSMs before is the slot after the last
//! parameter.
//!
//! Every hook is resolved before anything is loaded, and every problem is reported at once: a
//! kernel that lacks a hook, or whose prototype does not give a needed argument exactly once,
//! stops the agent with each hook named, the prototype found and the prototypes of the tested
//! kernels. A prototype that resolves but is not one of the tested ones is accepted (the
//! arguments were found by what they are) and reported as untested.

use std::{collections::BTreeMap, fmt};

use btf_rs::Btf;
use bulkhead_common::hook_abi::{HOOK_ARGS, HookArg, HookKind, Param};

use super::hook_prototypes::{self, ParamType, Prototype};

/// An eBPF program's context has at most this many slots (MAX_BPF_FUNC_ARGS, plus the
/// return value of an LSM hook).
const MAX_SLOTS: usize = 13;

/// The prototypes of the kernel matrix, as `cargo xtask test` checks them against each
/// kernel's BTF. Shown when a prototype cannot be resolved, and used to say "untested".
pub const KNOWN_PROTOTYPES: &[(&str, &str)] = &[
    ("bookworm", include_str!("prototypes/bookworm.txt")),
    ("trixie", include_str!("prototypes/trixie.txt")),
    ("sid", include_str!("prototypes/sid.txt")),
];

/// Where each argument of HOOK_ARGS is on this kernel: `slots[id]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgSlots {
    pub slots: Vec<u8>,
    /// Hooks whose prototype is not one of the tested kernels' (but resolved).
    pub untested: Vec<Prototype>,
}

/// Why a hook cannot be used on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookProblem {
    Missing {
        hook: &'static str,
        kind: HookKind,
    },
    Unresolved {
        prototype: Prototype,
        reasons: Vec<String>,
    },
}

/// Every problem found, for one error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct HookProblems(pub Vec<HookProblem>);

impl fmt::Display for HookProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "this kernel's hooks do not match what bulkhead's programs need ({} problem(s)); \
             nothing was loaded or replaced:",
            self.0.len()
        )?;
        for problem in &self.0 {
            match problem {
                HookProblem::Missing { hook, kind } => {
                    let what = match kind {
                        HookKind::Lsm => "LSM hook",
                        HookKind::Tracepoint => "BTF tracepoint",
                    };
                    writeln!(f, "- {what} {hook}: not in this kernel's BTF")?;
                }
                HookProblem::Unresolved { prototype, reasons } => {
                    writeln!(
                        f,
                        "- {}: found `{prototype}`: {}",
                        prototype.hook,
                        reasons.join("; ")
                    )?;
                }
            }
            let hook = match problem {
                HookProblem::Missing { hook, .. } => hook.to_string(),
                HookProblem::Unresolved { prototype, .. } => prototype.hook.clone(),
            };
            for (kernel, known) in known_prototypes(&hook) {
                writeln!(f, "    known ({kernel}): `{known}`")?;
            }
        }
        Ok(())
    }
}

/// The tested kernels' prototypes of `hook`, one per distinct prototype, with the kernels
/// that have it.
pub fn known_prototypes(hook: &str) -> Vec<(String, Prototype)> {
    let mut distinct: Vec<(String, Prototype)> = Vec::new();
    for (kernel, text) in KNOWN_PROTOTYPES {
        let Some(proto) = parse_prototypes(text)
            .ok()
            .and_then(|protos| protos.into_iter().find(|p| p.hook == hook))
        else {
            continue;
        };
        match distinct.iter_mut().find(|(_, p)| *p == proto) {
            Some((kernels, _)) => {
                kernels.push_str(", ");
                kernels.push_str(kernel);
            }
            None => distinct.push(((*kernel).to_owned(), proto)),
        }
    }
    distinct
}

/// A prototype file: one prototype per line, `#` comments.
pub fn parse_prototypes(text: &str) -> anyhow::Result<Vec<Prototype>> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(Prototype::parse)
        .collect()
}

/// The distinct hooks of HOOK_ARGS, in first-use order.
pub fn hooks() -> Vec<(&'static str, HookKind)> {
    let mut hooks: Vec<(&'static str, HookKind)> = Vec::new();
    for arg in HOOK_ARGS {
        if !hooks.iter().any(|(hook, _)| *hook == arg.hook) {
            hooks.push((arg.hook, arg.kind));
        }
    }
    hooks
}

/// Reads every hook's prototype from `btf`.
pub fn prototypes_from_btf(btf: &Btf) -> anyhow::Result<BTreeMap<&'static str, Prototype>> {
    let mut found = BTreeMap::new();
    for (hook, kind) in hooks() {
        if let Some(proto) = hook_prototypes::read(btf, hook, kind)? {
            found.insert(hook, proto);
        }
    }
    Ok(found)
}

/// Resolves every argument against `prototypes` (hook name -> prototype on this kernel).
pub fn resolve(prototypes: &BTreeMap<&'static str, Prototype>) -> Result<ArgSlots, HookProblems> {
    let mut problems = Vec::new();
    let mut slots = vec![0u8; HOOK_ARGS.len()];
    for (hook, kind) in hooks() {
        let Some(proto) = prototypes.get(hook) else {
            problems.push(HookProblem::Missing { hook, kind });
            continue;
        };
        let mut reasons = Vec::new();
        for (id, arg) in HOOK_ARGS.iter().enumerate().filter(|(_, a)| a.hook == hook) {
            match slot_of(arg, proto) {
                Ok(slot) => slots[id] = slot,
                Err(reason) => reasons.push(reason),
            }
        }
        if !reasons.is_empty() {
            problems.push(HookProblem::Unresolved {
                prototype: proto.clone(),
                reasons,
            });
        }
    }
    if !problems.is_empty() {
        return Err(HookProblems(problems));
    }
    let untested = hooks()
        .into_iter()
        .filter_map(|(hook, _)| prototypes.get(hook))
        .filter(|proto| {
            !known_prototypes(&proto.hook)
                .iter()
                .any(|(_, known)| known == *proto)
        })
        .cloned()
        .collect();
    Ok(ArgSlots { slots, untested })
}

/// The context slot of one argument, or why there is none.
fn slot_of(arg: &HookArg, proto: &Prototype) -> Result<u8, String> {
    let slot = match arg.param {
        Param::Verdict => {
            if arg.kind != HookKind::Lsm || !proto.returns_int() {
                return Err(format!(
                    "a verdict is needed but the hook returns {}",
                    proto.returns
                ));
            }
            proto.params.len()
        }
        // A named pointer must carry its name even when its type is unique: a kernel left with
        // one `struct inode *` in inode_init_security must not give `dir` and `inode` the
        // same slot.
        Param::StructPtr { ty, name } => unique(
            proto,
            |t| matches!(t, ParamType::StructPtr(s) if s == ty),
            name,
            &format!("struct {ty} *"),
        )
        .and_then(|slot| match name {
            Some(name) if proto.params[slot].name != name => {
                Err(format!("no struct {ty} * parameter named `{name}`"))
            }
            _ => Ok(slot),
        })?,
        // Integers are found by name always: one integer is as good as another to the type
        // system, so a lone remaining integer must not stand in for a removed one.
        Param::Integer { name } => unique(
            proto,
            |t| matches!(t, ParamType::Integer(_)),
            Some(name),
            &format!("integer `{name}`"),
        )
        .and_then(|slot| {
            if proto.params[slot].name == name {
                Ok(slot)
            } else {
                Err(format!("no integer parameter named `{name}`"))
            }
        })?,
    };
    if slot >= MAX_SLOTS {
        return Err(format!("slot {slot} is beyond an eBPF context"));
    }
    Ok(u8::try_from(slot).expect("below MAX_SLOTS"))
}

/// The one parameter whose type matches; when several do, the one called `name`.
fn unique(
    proto: &Prototype,
    matches: impl Fn(&ParamType) -> bool,
    name: Option<&str>,
    what: &str,
) -> Result<usize, String> {
    let candidates: Vec<usize> = (0..proto.params.len())
        .filter(|&i| matches(&proto.params[i].ty))
        .collect();
    match (candidates.as_slice(), name) {
        ([], _) => Err(format!("no {what} parameter")),
        ([only], _) => Ok(*only),
        (several, Some(name)) => {
            let named: Vec<usize> = several
                .iter()
                .copied()
                .filter(|&i| proto.params[i].name == name)
                .collect();
            match named.as_slice() {
                [one] => Ok(*one),
                _ => Err(format!(
                    "{} parameters match {what} and none (or more than one) is named `{name}`",
                    several.len()
                )),
            }
        }
        (several, None) => Err(format!(
            "{} parameters match {what}, nothing tells them apart",
            several.len()
        )),
    }
}

#[cfg(test)]
mod tests;
