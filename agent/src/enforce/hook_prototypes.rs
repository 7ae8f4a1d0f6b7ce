//! Hook prototypes as the running kernel declares them, read from its BTF.
//!
//! An LSM hook `<hook>` is the BTF function `bpf_lsm_<hook>` (the attach point the kernel
//! generates for every hook); a BTF tracepoint `<tp>` is the typedef `btf_trace_<tp>`, a
//! pointer to a prototype whose first parameter is the tracepoint's private data. Types are
//! reduced to what the argument resolution (hook_abi.rs) needs, and printed in a C-like form
//! that can be read back: the committed prototypes of the kernel matrix (`prototypes/`) are in
//! that form.

use std::fmt;

use anyhow::{Context, bail};
use btf_rs::{Btf, BtfType, Type};
use bulkhead_common::hook_abi::HookKind;

/// A parameter's type, as far as finding arguments needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// A pointer to `struct <name>` (qualifiers of the pointee dropped).
    StructPtr(String),
    /// An integer, bool or enum, spelled as the kernel's base type (`unsigned int`,
    /// `long long unsigned int`, `_Bool`, `enum lockdown_reason`).
    Integer(String),
    /// Anything else, spelled C-like (`const char **`, `union bpf_attr *`, `void *`).
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    pub ty: ParamType,
}

/// A hook's prototype. For a tracepoint, `params` excludes the private-data parameter, so
/// parameter `i` is context slot `i` for both kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prototype {
    pub hook: String,
    pub returns: ParamType,
    pub params: Vec<Parameter>,
}

impl Prototype {
    pub fn returns_int(&self) -> bool {
        self.returns == ParamType::Integer("int".to_owned())
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::StructPtr(name) => write!(f, "struct {name} *"),
            ParamType::Integer(spelling) | ParamType::Other(spelling) => f.write_str(spelling),
        }
    }
}

impl fmt::Display for Prototype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.hook)?;
        for (i, param) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            // BTF leaves tracepoint parameters unnamed.
            let name = if param.name.is_empty() {
                "_"
            } else {
                &param.name
            };
            write!(f, "{name}: {}", param.ty)?;
        }
        write!(f, ") -> {}", self.returns)
    }
}

impl ParamType {
    /// Reads back what `Display` wrote.
    pub fn parse(text: &str) -> ParamType {
        let text = text.trim();
        if let Some(name) = text
            .strip_prefix("struct ")
            .and_then(|rest| rest.strip_suffix(" *"))
            .filter(|name| is_identifier(name))
        {
            return ParamType::StructPtr(name.to_owned());
        }
        let integer_words = [
            "signed", "unsigned", "char", "short", "int", "long", "_Bool",
        ];
        let is_integer = text.strip_prefix("enum ").map_or_else(
            || text.split(' ').all(|word| integer_words.contains(&word)),
            is_identifier,
        );
        if is_integer {
            ParamType::Integer(text.to_owned())
        } else {
            ParamType::Other(text.to_owned())
        }
    }
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Prototype {
    /// Reads one line of `Display` output: `hook(name: type, ...) -> type`.
    pub fn parse(line: &str) -> anyhow::Result<Prototype> {
        let (signature, returns) = line
            .rsplit_once(") -> ")
            .with_context(|| format!("no ') -> ' in prototype line '{line}'"))?;
        let (hook, params) = signature
            .split_once('(')
            .with_context(|| format!("no '(' in prototype line '{line}'"))?;
        let params = if params.trim().is_empty() {
            Vec::new()
        } else {
            params
                .split(", ")
                .map(|param| {
                    let (name, ty) = param
                        .split_once(": ")
                        .with_context(|| format!("parameter '{param}' has no ': '"))?;
                    let name = match name.trim() {
                        "_" => "",
                        name => name,
                    };
                    Ok(Parameter {
                        name: name.to_owned(),
                        ty: ParamType::parse(ty),
                    })
                })
                .collect::<anyhow::Result<_>>()?
        };
        Ok(Prototype {
            hook: hook.trim().to_owned(),
            returns: ParamType::parse(returns),
            params,
        })
    }
}

/// The hook's prototype in this BTF, or `None` when the kernel has no such hook.
pub fn read(btf: &Btf, hook: &str, kind: HookKind) -> anyhow::Result<Option<Prototype>> {
    let (symbol, skip) = match kind {
        HookKind::Lsm => (format!("bpf_lsm_{hook}"), 0),
        HookKind::Tracepoint => (format!("btf_trace_{hook}"), 1),
    };
    let Ok(types) = btf.resolve_types_by_name(&symbol) else {
        return Ok(None);
    };
    let proto = types.into_iter().find_map(|ty| match (kind, ty) {
        (HookKind::Lsm, Type::Func(func)) => btf.resolve_chained_type(&func).ok(),
        (HookKind::Tracepoint, Type::Typedef(typedef)) => btf
            .resolve_chained_type(&typedef)
            .ok()
            .and_then(|ptr| match ptr {
                Type::Ptr(ptr) => btf.resolve_chained_type(&ptr).ok(),
                _ => None,
            }),
        _ => None,
    });
    let Some(Type::FuncProto(proto)) = proto else {
        return Ok(None);
    };
    if proto.parameters.len() < skip {
        bail!("{symbol} in kernel BTF has no private-data parameter");
    }
    let params = proto.parameters[skip..]
        .iter()
        .map(|param| {
            Ok(Parameter {
                name: btf.resolve_name(param).unwrap_or_default(),
                ty: classify(btf, &btf.resolve_chained_type(param)?)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let returns = match proto.return_type_id() {
        0 => ParamType::Other("void".to_owned()),
        id => classify(btf, &btf.resolve_type_by_id(id)?)?,
    };
    Ok(Some(Prototype {
        hook: hook.to_owned(),
        returns,
        params,
    }))
}

/// How deep typedef/qualifier/pointer chains may go before the BTF is taken as malformed.
const MAX_CHAIN: usize = 16;

fn classify(btf: &Btf, ty: &Type) -> anyhow::Result<ParamType> {
    let base = strip(btf, ty.clone())?;
    if let Type::Ptr(ptr) = &base {
        let pointee = strip(btf, btf.resolve_chained_type(ptr)?)?;
        if let Type::Struct(s) = &pointee {
            return Ok(ParamType::StructPtr(btf.resolve_name(s)?));
        }
        if let Type::Fwd(f) = &pointee
            && f.is_struct()
        {
            return Ok(ParamType::StructPtr(btf.resolve_name(f)?));
        }
    }
    Ok(match &base {
        Type::Int(int) => ParamType::Integer(btf.resolve_name(int)?),
        Type::Enum(e) => ParamType::Integer(format!("enum {}", btf.resolve_name(e)?)),
        Type::Enum64(e) => ParamType::Integer(format!("enum {}", btf.resolve_name(e)?)),
        _ => ParamType::Other(spell(btf, ty, 0)?),
    })
}

/// The type under typedefs and qualifiers (the same unwrapping the struct-field lookup uses).
fn strip(btf: &Btf, ty: Type) -> anyhow::Result<Type> {
    super::kernel_layout::skip_qualifiers(btf, ty)
}

/// C-like spelling of a type that is neither a struct pointer nor an integer.
fn spell(btf: &Btf, ty: &Type, depth: usize) -> anyhow::Result<String> {
    if depth > MAX_CHAIN {
        bail!("type chain too deep in kernel BTF");
    }
    let named = |kind: &str, t: &dyn BtfType| -> anyhow::Result<String> {
        Ok(format!("{kind}{}", btf.resolve_name(t)?))
    };
    Ok(match ty {
        Type::Void => "void".to_owned(),
        Type::Ptr(p) => {
            let inner = spell(btf, &btf.resolve_chained_type(p)?, depth + 1)?;
            if inner.ends_with('*') {
                format!("{inner}*")
            } else {
                format!("{inner} *")
            }
        }
        Type::Const(c) => format!(
            "const {}",
            spell(btf, &btf.resolve_chained_type(c)?, depth + 1)?
        ),
        Type::Volatile(t) | Type::Restrict(t) => {
            spell(btf, &btf.resolve_chained_type(t)?, depth + 1)?
        }
        Type::TypeTag(t) => spell(btf, &btf.resolve_chained_type(t)?, depth + 1)?,
        Type::Typedef(t) => named("", t)?,
        Type::Int(t) => named("", t)?,
        Type::Float(t) => named("", t)?,
        Type::Struct(t) => named("struct ", t)?,
        Type::Union(t) => named("union ", t)?,
        Type::Enum(t) => named("enum ", t)?,
        Type::Enum64(t) => named("enum ", t)?,
        Type::Fwd(t) if t.is_union() => named("union ", t)?,
        Type::Fwd(t) => named("struct ", t)?,
        Type::FuncProto(_) => "fn".to_owned(),
        Type::Array(_) => "array".to_owned(),
        other => other.name().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_agree() {
        let line = "inode_init_security(inode: struct inode *, dir: struct inode *, \
                    qstr: struct qstr *, name: const char **, value: void **, len: size_t *) -> int";
        let proto = Prototype::parse(line).unwrap();
        assert_eq!(proto.to_string(), line);
        assert_eq!(proto.params.len(), 6);
        assert_eq!(proto.params[1].ty, ParamType::StructPtr("inode".into()));
        assert_eq!(proto.params[3].ty, ParamType::Other("const char **".into()));
        assert!(proto.returns_int());
        let void = Prototype::parse("file_set_fowner(file: struct file *) -> void").unwrap();
        assert!(!void.returns_int());
        assert_eq!(
            Prototype::parse("sb_mount() -> int").unwrap().params,
            Vec::new()
        );
    }

    #[test]
    fn integers_are_told_from_other_types() {
        for integer in [
            "int",
            "unsigned int",
            "long long unsigned int",
            "_Bool",
            "enum lockdown_reason",
        ] {
            assert_eq!(
                ParamType::parse(integer),
                ParamType::Integer(integer.into())
            );
        }
        for other in [
            "union bpf_attr *",
            "int *",
            "enum x *",
            "struct a b *",
            "void *",
        ] {
            assert_eq!(ParamType::parse(other), ParamType::Other(other.into()));
        }
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert!(Prototype::parse("bpf(cmd int) -> int").is_err());
        assert!(Prototype::parse("bpf cmd: int").is_err());
    }
}
