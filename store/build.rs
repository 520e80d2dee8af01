//! Generates the etcd wire types (messages only) and secretd's raft-log entry
//! type from the protos in `proto/` (the workspace's one copy of the wire). The store applies etcd's own request
//! types, as etcd does; the gRPC services are generated in `api`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../proto";
    let files = [
        "etcd/mvccpb/kv.proto",
        "etcd/authpb/auth.proto",
        "etcd/etcdserverpb/rpc.proto",
        "etcd/v3lockpb/v3lock.proto",
        "etcd/v3electionpb/v3election.proto",
        "secretd/internal.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={root}/{f}");
    }
    let fds = protox::compile(files, [root])?;
    // proto3 JSON (int64 as strings, bytes as base64, enums by name) with
    // the protos' own field names, as etcd's gRPC gateway writes them.
    let descriptors = prost::Message::encode_to_vec(&fds);
    prost_build::Config::new().compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .build(&[
            ".etcdserverpb",
            ".mvccpb",
            ".authpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for pkg in [
        "mvccpb",
        "authpb",
        "etcdserverpb",
        "v3lockpb",
        "v3electionpb",
    ] {
        let path = out.join(format!("{pkg}.serde.rs"));
        let text = std::fs::read_to_string(&path)?;
        std::fs::write(&path, open_enums(&text)?)?;
    }
    Ok(())
}

/// A list of enums written: the element type on the line after `line`,
/// then the error and the collect, all replaced by one open map.
fn open_enum_list<'a>(
    line: &str,
    field: &str,
    lines: &mut impl Iterator<Item = &'a str>,
) -> Result<String, String> {
    let ty_line = lines.next().unwrap_or_default().trim();
    let ty = ty_line
        .strip_suffix("::try_from(v)")
        .ok_or_else(|| format!("an enum list written another way: {ty_line}"))?;
    let (err, end) = (
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    );
    if !err.trim_start().starts_with(".map_err(") || !end.trim_start().starts_with("}).collect") {
        return Err(format!(
            "an enum list written another way: {line} {err} {end}"
        ));
    }
    let indent = &line[..line.len() - line.trim_start().len()];
    Ok(format!(
        "{indent}let v = self.{field}.iter().cloned().map(crate::pb::OpenEnum::<{ty}>::new).collect::<Vec<_>>();\n"
    ))
}

/// pbjson refuses an enum given as an integer it does not name, and fails
/// to write one; etcd's gateway (protojson) keeps it, as the binary wire
/// does. Every enum field is read and written through `pb::OpenEnum`
/// instead. The generated code's shape is checked: a pbjson that writes
/// enums another way fails the build here, not a request at run time.
fn open_enums(text: &str) -> Result<String, String> {
    const READ: &str = "map_.next_value::<";
    const READ_END: &str = ">()? as i32);";
    const READ_VEC_END: &str = ">>()?.into_iter().map(|x| x as i32).collect());";
    const WRITE: &str = "let v = ";
    const WRITE_END: &str = "::try_from(self.";
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let at = line.find(READ).map(|i| i + READ.len());
        if let (Some(at), true) = (at, line.ends_with(READ_VEC_END)) {
            let ty = line[at..line.len() - READ_VEC_END.len()]
                .strip_prefix("Vec<")
                .ok_or_else(|| format!("an enum list read another way: {line}"))?;
            out.push_str(&format!(
                "{}Vec<crate::pb::OpenEnum<{ty}>>>()?.into_iter().map(|x| x.0).collect());\n",
                &line[..at]
            ));
        } else if let (Some(at), true) = (at, line.ends_with(READ_END)) {
            let ty = &line[at..line.len() - READ_END.len()];
            out.push_str(&format!(
                "{}crate::pb::OpenEnum<{ty}>>()?.0);\n",
                &line[..at]
            ));
        } else if let Some(field) = line
            .trim_start()
            .strip_prefix("let v = self.")
            .and_then(|l| l.strip_suffix(".iter().cloned().map(|v| {"))
        {
            out.push_str(&open_enum_list(line, field, &mut lines)?);
        } else if let (Some(w), Some(t)) = (line.find(WRITE), line.find(WRITE_END)) {
            let ty = &line[w + WRITE.len()..t];
            let field = line[t + WRITE_END.len()..]
                .strip_suffix(')')
                .ok_or_else(|| format!("an enum written another way: {line}"))?;
            let next = lines.next().unwrap_or_default();
            if !next.trim_start().starts_with(".map_err(") {
                return Err(format!("an enum written another way: {line} {next}"));
            }
            out.push_str(&format!(
                "{}crate::pb::OpenEnum::<{ty}>::new(self.{field});\n",
                &line[..w + WRITE.len()]
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if ["()? as i32", "map(|x| x as i32)", "Invalid variant"]
        .iter()
        .any(|left| out.contains(left))
    {
        return Err("an enum read or written that was not opened".into());
    }
    Ok(out)
}
