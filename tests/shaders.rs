//! Every WGSL entry point parses and validates with naga, in every variant the runtime can
//! build (`plt::kernels::all_variants`), without a GPU; and the prelude's structs match the host's.

use plt::gpu::{shader_source, validate_shader, SHADERS};
use plt::kernels::{all_variants, Matmul, MatmulPath, Norm, NormRows, OutMap, Swiglu, WeightFormat};

#[test]
fn every_entry_point_validates() {
    let list = all_variants();
    for v in &list {
        let src = shader_source(v.shader, &v.defines).unwrap();
        if let Err(e) = validate_shader(v.shader, v.entry, &src) {
            panic!("{e}");
        }
    }
    // Every entry point of every shader file is in the list (files without entry points, the
    // prelude and included pieces, are part of the others).
    for (name, _) in SHADERS.iter().filter(|(_, body)| body.contains("@compute")) {
        let first = list.iter().find(|v| v.shader == *name).unwrap_or_else(|| panic!("shader {name} has no variant"));
        let src = shader_source(name, &first.defines).unwrap();
        let module = naga::front::wgsl::parse_str(&plt::gpu::naga_dialect(&src)).unwrap();
        for ep in &module.entry_points {
            assert!(list.iter().any(|v| v.shader == *name && v.entry == ep.name), "{name}:{} is not validated", ep.name);
        }
    }
}

#[test]
fn errors_name_the_shader_and_entry() {
    let v = Norm { d: 4, eps: 1e-5, rows: NormRows::Pass, wg: 64 }.variant();
    let missing = v.defines.names()[1];
    let src = shader_source(v.shader, &v.defines.clone().without(missing)).unwrap();
    let e = validate_shader(v.shader, v.entry, &src).unwrap_err().to_string();
    assert!(e.contains(v.shader) && e.contains(v.entry) && e.contains("no definition"), "{e}");
    let v = Swiglu { f: 4 }.variant();
    let src = shader_source(v.shader, &v.defines).unwrap();
    let e = validate_shader(v.shader, "nope", &src).unwrap_err().to_string();
    assert!(e.contains("no such entry point"), "{e}");
}

/// `// #if NAME` blocks follow the bool define, `enable` lines move to the top, and a missing
/// or non-bool define is an error naming it.
#[test]
fn conditional_blocks_and_enables() {
    let m = |subgroups: bool| Matmul { k: 40, n: 70, storage: WeightFormat::F16, path: MatmulPath::RowSharing, lanes: 8, subgroups, logit_rows: false, norm_eps: None, glu: false, out: OutMap::dense(70) };
    let d = |sg: bool| m(sg).variant().defines;
    let shader = m(false).variant().shader;
    let on = shader_source(shader, &d(true)).unwrap();
    let off = shader_source(shader, &d(false)).unwrap();
    assert!(on.starts_with("enable subgroups;\n"), "{}", &on[..80]);
    assert!(on.contains("subgroupShuffleXor") && !off.contains("subgroupShuffleXor"));
    assert!(!off.contains("enable ") && off.contains("red[base + l]") && !on.contains("red[base + l]"));
    let directive = |src: &str| src.lines().any(|l| l.trim_start().starts_with("// #"));
    assert!(!directive(&on) && !directive(&off), "directive lines are not passed on");
    assert_eq!(on.matches("fn reduce_store").count(), 1);
    // The define an `// #if` line of the shader names: missing, or not a bool, is an error naming it.
    let v = m(false).variant();
    let flag = SHADERS
        .iter()
        .flat_map(|(_, body)| body.lines())
        .filter_map(|l| l.trim().strip_prefix("// #if "))
        .map(str::trim)
        .find(|f| v.defines.names().contains(f))
        .expect("an #if line on one of the matmul's defines");
    let e = shader_source(v.shader, &v.defines.clone().without(flag)).unwrap_err().to_string();
    assert!(e.contains(v.shader) && e.contains(flag), "{e}");
    let e = shader_source(v.shader, &v.defines.clone().with_u32(flag, 1)).unwrap_err().to_string();
    assert!(e.contains("bool define"), "{e}");
}

/// The WGSL `Row` and `Pass` structs have the host structs' sizes (the layouts must agree).
#[test]
fn prelude_structs_match_the_host() {
    let v = Swiglu { f: 4 }.variant();
    let src = shader_source(v.shader, &v.defines).unwrap();
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

/// Every variant translates, as wgpu's backends translate it, to SPIR-V (Vulkan), MSL (Metal)
/// and HLSL (DX12, shader model 6.0: wave operations for the subgroup variants), so a kernel one
/// of those backends would reject fails on a machine that has none of them.
#[test]
fn every_variant_translates_for_vulkan_metal_and_dx12() {
    use naga::back::{hlsl, msl, spv};
    let mut checked = 0;
    for v in all_variants() {
        let src = shader_source(v.shader, &v.defines).unwrap();
        let (module, _) = validate_shader(v.shader, v.entry, &src).unwrap();
        let what = format!("{}:{} {:?}", v.shader, v.entry, v.defines.names());
        let caps = naga::valid::Capabilities::default() | naga::valid::Capabilities::SUBGROUP | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let stage = naga::ShaderStage::Compute;

        let spv_pipeline = spv::PipelineOptions { shader_stage: stage, entry_point: v.entry.to_string() };
        let words = spv::write_vec(&module, &info, &spv::Options::default(), Some(&spv_pipeline)).unwrap_or_else(|e| panic!("{what}: SPIR-V: {e}"));
        assert!(words.len() > 5 && words[0] == 0x0723_0203, "{what}: SPIR-V magic");

        let msl_options = msl::Options { lang_version: (2, 4), ..Default::default() };
        let msl_pipeline = msl::PipelineOptions { entry_point: Some((stage, v.entry.to_string())), ..Default::default() };
        let (text, _) = msl::write_string(&module, &info, &msl_options, &msl_pipeline).unwrap_or_else(|e| panic!("{what}: MSL: {e}"));
        assert!(text.contains("kernel void"), "{what}: MSL has no kernel");

        let hlsl_options = hlsl::Options { shader_model: hlsl::ShaderModel::V6_0, ..Default::default() };
        let hlsl_pipeline = hlsl::PipelineOptions { entry_point: Some((stage, v.entry.to_string())) };
        let mut text = String::new();
        hlsl::Writer::new(&mut text, &hlsl_options, &hlsl_pipeline)
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{what}: HLSL: {e}"));
        assert!(text.contains("[numthreads("), "{what}: HLSL has no compute entry");
        checked += 1;
    }
    assert!(checked > 100, "{checked} variants");
}
