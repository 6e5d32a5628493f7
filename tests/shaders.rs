//! Every WGSL entry point parses and validates with naga, at several specialisations
//! (defines), without a GPU; and the prelude's structs match the host's.

use plt::gpu::{shader_source, validate_shader, Defines, SHADERS};

fn shape(gate_mode: usize, dh: usize, kv_f16: bool) -> Defines {
    shape_split(gate_mode, dh, kv_f16, 0)
}

/// With the global branch split every `split` positions (0: not split); TMAX is 64.
fn shape_split(gate_mode: usize, dh: usize, kv_f16: bool, split: usize) -> Defines {
    Defines::new()
        .u32("H", 4)
        .u32("HKV", 2)
        .u32("DH", dh)
        .u32("D", 40)
        .f32("THETA", 10000.0)
        .u32("TMAX", 64)
        .u32("SLOTS", 2)
        .u32("W", 3)
        .u32("RINGS", 2)
        .u32("GATE_MODE", gate_mode)
        .f32("EPS", 1e-5)
        .u32("RG", 4)
        .bool("KV_F16", kv_f16)
        .u32("SPLIT", split)
        .u32("NSPLIT", if split == 0 { 1 } else { 64usize.div_ceil(split) })
}

/// (shader, entry, defines) for every entry point, in each variant the runtime builds.
fn all() -> Vec<(&'static str, &'static str, Defines)> {
    let mut v = Vec::new();
    for f16 in [false, true] {
        for logits in [false, true] {
            for sg in [false, true] {
                for entry in ["matmul_tiled", "matmul_rows"] {
                    let d = Defines::new().u32("K", 33).u32("O", 70).bool("W_F16", f16).bool("ROWS_FROM_LOGITS", logits);
                    for lanes in [8, 32] {
                        v.push(("matmul", entry, d.clone().u32("LANES", lanes).bool("SUBGROUPS", sg)));
                    }
                }
                for norm in [false, true] {
                    let d = Defines::new().u32("K", 40).u32("O", 70).bool("W_F16", f16).bool("ROWS_FROM_LOGITS", logits);
                    for glu in [false, true] {
                        for lanes in [8, 16, 32] {
                            v.push(("matmul_vec", "matmul_rows_vec", d.clone().bool("NORM", norm).f32("EPS", 1e-5).u32("LANES", lanes).bool("SUBGROUPS", sg).bool("GLU", glu)));
                        }
                    }
                }
            }
        }
        v.push(("embed", "embed_input", Defines::new().u32("D", 40).bool("W_F16", f16)));
    }
    for entry in ["rmsnorm", "rmsnorm_logits", "norm_carry"] {
        v.push(("norm", entry, Defines::new().u32("D", 40).f32("EPS", 1e-5).u32("WG", 64)));
    }
    v.push(("elementwise", "swiglu", Defines::new().u32("F", 72)));
    v.push(("subgroups", "subgroup_probe", Defines::new()));
    v.push(("sample", "sample", Defines::new().u32("V", 300).u32("HMAX", 256)));
    v.push(("copy", "copy", Defines::new()));
    for kv_f16 in [false, true] {
        for entry in ["rope_store", "ring_store"] {
            v.push(("rope", entry, shape(1, 10, kv_f16)));
        }
        for gate in [0, 1, 2] {
            for dh in [10, 64, 130] {
                v.push(("attention", "attention", shape(gate, dh, kv_f16)));
                v.push(("attention", "attention", shape_split(gate, dh, kv_f16, 16)));
                v.push(("attention", "attention_combine", shape_split(gate, dh, kv_f16, 16)));
            }
        }
    }
    v
}

#[test]
fn every_entry_point_validates() {
    let list = all();
    for (shader, entry, defs) in &list {
        let src = shader_source(shader, defs).unwrap();
        if let Err(e) = validate_shader(shader, entry, &src) {
            panic!("{e}");
        }
    }
    // Every entry point of every shader file is in the list above (files without entry points,
    // the prelude and included pieces, are part of the others).
    for (name, _) in SHADERS.iter().filter(|(_, body)| body.contains("@compute")) {
        let src = shader_source(name, &list.iter().find(|(s, _, _)| s == name).unwrap().2).unwrap();
        let module = naga::front::wgsl::parse_str(&plt::gpu::naga_dialect(&src)).unwrap();
        for ep in &module.entry_points {
            assert!(list.iter().any(|(s, e, _)| s == name && *e == ep.name), "{name}:{} is not validated", ep.name);
        }
    }
}

#[test]
fn errors_name_the_shader_and_entry() {
    let src = shader_source("norm", &Defines::new().u32("D", 4)).unwrap(); // EPS, WG missing
    let e = validate_shader("norm", "rmsnorm", &src).unwrap_err().to_string();
    assert!(e.contains("norm") && e.contains("rmsnorm") && e.contains("no definition"), "{e}");
    let src = shader_source("elementwise", &Defines::new().u32("F", 4)).unwrap();
    let e = validate_shader("elementwise", "nope", &src).unwrap_err().to_string();
    assert!(e.contains("no such entry point"), "{e}");
}

/// `// #if NAME` blocks follow the bool define, `enable` lines move to the top, and a missing
/// or non-bool define is an error naming it.
#[test]
fn conditional_blocks_and_enables() {
    let d = |sg: bool| Defines::new().u32("K", 40).u32("O", 70).bool("W_F16", true).bool("ROWS_FROM_LOGITS", false).bool("NORM", false).f32("EPS", 1e-5).u32("LANES", 8).bool("SUBGROUPS", sg).bool("GLU", false);
    let on = shader_source("matmul_vec", &d(true)).unwrap();
    let off = shader_source("matmul_vec", &d(false)).unwrap();
    assert!(on.starts_with("enable subgroups;\n"), "{}", &on[..80]);
    assert!(on.contains("subgroupShuffleXor") && !off.contains("subgroupShuffleXor"));
    assert!(!off.contains("enable ") && off.contains("red[base + l]") && !on.contains("red[base + l]"));
    let directive = |src: &str| src.lines().any(|l| l.trim_start().starts_with("// #"));
    assert!(!directive(&on) && !directive(&off), "directive lines are not passed on");
    assert_eq!(on.matches("fn reduce_store").count(), 1);
    let none = Defines::new().u32("K", 40).u32("O", 70).bool("W_F16", true).bool("ROWS_FROM_LOGITS", false).bool("NORM", false).f32("EPS", 1e-5).u32("LANES", 8);
    let e = shader_source("matmul_vec", &none).unwrap_err().to_string();
    assert!(e.contains("matmul_vec") && e.contains("SUBGROUPS"), "{e}");
    let e = shader_source("matmul_vec", &none.u32("SUBGROUPS", 1)).unwrap_err().to_string();
    assert!(e.contains("bool define"), "{e}");
}

/// The WGSL `Row` and `Pass` structs have the host structs' sizes (the layouts must agree).
#[test]
fn prelude_structs_match_the_host() {
    let src = shader_source("elementwise", &Defines::new().u32("F", 4)).unwrap();
    let module = naga::front::wgsl::parse_str(&src).unwrap();
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).unwrap();
    let mut found = 0;
    for (h, ty) in module.types.iter() {
        match ty.name.as_deref() {
            Some("Row") => assert_eq!(layouter[h].size as usize, std::mem::size_of::<plt::model::Row>()),
            Some("Pass") => assert_eq!(layouter[h].size as usize, std::mem::size_of::<plt::model::PassInfo>()),
            _ => continue,
        }
        found += 1;
    }
    assert_eq!(found, 2, "Row and Pass are declared in the prelude");
}
