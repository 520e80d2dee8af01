//! The code's shape, measured from its source with `syn`: how long each
//! non-test function is, how long each file is, and which modules of a
//! crate use which of their siblings. Tests in `tests/shape.rs` turn
//! these into rules; this module only measures.
//!
//! Module edges are found from paths as written (`crate::a::b`,
//! `super::b`, `self::c`, and a bare sibling name after `use super::*`).
//! Root re-exports (`crate::Thing` where lib.rs says `pub use a::Thing`)
//! are followed one step, so that a re-export cannot hide a cycle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Every `.rs` file under `root` that is ours: not build output, not the
/// patched third-party crates in `vendor/`.
pub fn rust_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | "vendor" | ".git" | "fixtures") {
                    todo.push(p);
                }
            } else if name.ends_with(".rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// True when a file holds only tests (integration tests and their support).
pub fn is_test_file(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "tests")
}

/// A function and its length in lines, `fn` keyword to closing brace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnLength {
    pub name: String,
    pub line: usize,
    pub lines: usize,
}

/// Parses one file; the error names the file.
pub fn parse(path: &Path) -> Result<syn::File, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    syn::parse_file(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every non-test function of a file with its length.
pub fn function_lengths(file: &syn::File) -> Vec<FnLength> {
    let mut v = FnVisitor {
        out: Vec::new(),
        owner: Vec::new(),
    };
    v.visit_file(file);
    v.out
}

fn is_test_attr(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let path = a.path();
        if path.segments.last().is_some_and(|s| s.ident == "test") {
            return true;
        }
        // #[cfg(test)] and #[cfg(any(test, ...))]: test-only code.
        path.is_ident("cfg")
            && a.meta.require_list().is_ok_and(|l| {
                l.tokens
                    .to_string()
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|w| w == "test")
            })
    })
}

struct FnVisitor {
    out: Vec<FnLength>,
    owner: Vec<String>,
}

impl FnVisitor {
    /// Records a function unless it is test code; says whether it did
    /// (test code is not walked into either).
    fn record(
        &mut self,
        attrs: &[syn::Attribute],
        sig: &syn::Signature,
        block: &syn::Block,
    ) -> bool {
        if is_test_attr(attrs) {
            return false;
        }
        let qualified = match self.owner.last() {
            Some(o) => format!("{o}::{}", sig.ident),
            None => sig.ident.to_string(),
        };
        let (start, end) = (
            sig.fn_token.span.start().line,
            block.brace_token.span.close().end().line,
        );
        self.out.push(FnLength {
            name: qualified,
            line: start,
            lines: end + 1 - start,
        });
        true
    }
}

impl<'a> Visit<'a> for FnVisitor {
    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        if !is_test_attr(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
    fn visit_item_impl(&mut self, i: &'a syn::ItemImpl) {
        if is_test_attr(&i.attrs) {
            return;
        }
        let ty = &i.self_ty;
        self.owner.push(quote_type(ty));
        syn::visit::visit_item_impl(self, i);
        self.owner.pop();
    }
    fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
        if self.record(&f.attrs, &f.sig, &f.block) {
            syn::visit::visit_item_fn(self, f);
        }
    }
    fn visit_impl_item_fn(&mut self, f: &'a syn::ImplItemFn) {
        if self.record(&f.attrs, &f.sig, &f.block) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }
    fn visit_trait_item_fn(&mut self, f: &'a syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.record(&f.attrs, &f.sig, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

fn quote_type(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default(),
        _ => "impl".to_string(),
    }
}

/// A module inside a crate, as its path from the crate root.
pub type ModPath = Vec<String>;

/// The crate's modules and, for each, the modules its paths name.
#[derive(Debug, Default)]
pub struct ModuleGraph {
    /// Every module, including inline (non-test) ones.
    pub modules: BTreeSet<ModPath>,
    /// module -> modules or items it names, resolved to crate paths.
    pub uses: BTreeMap<ModPath, BTreeSet<ModPath>>,
    /// Root re-exports: name at the root -> where it comes from.
    pub reexports: HashMap<String, ModPath>,
}

/// The module graph of one library crate, from `src/lib.rs` and the
/// files beside it. Binaries (`src/main.rs`, `src/bin/`) are thin shells
/// over the library and are not part of it.
pub fn module_graph(src: &Path) -> Result<ModuleGraph, String> {
    let mut g = ModuleGraph::default();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap();
        if rel.starts_with("bin") || rel == Path::new("main.rs") {
            continue;
        }
        let mut path: ModPath = rel
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
            path.pop();
        }
        let ast = parse(&file)?;
        g.modules.insert(path.clone());
        let mut v = UseVisitor {
            graph: &mut g,
            module: path,
        };
        v.visit_file(&ast);
    }
    Ok(g)
}

struct UseVisitor<'g> {
    graph: &'g mut ModuleGraph,
    module: ModPath,
}

impl UseVisitor<'_> {
    fn named(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else {
            return;
        };
        let mut base = self.module.clone();
        let rest: &[String] = match first.as_str() {
            "crate" => {
                base.clear();
                &segments[1..]
            }
            "self" => &segments[1..],
            "super" => {
                let supers = segments.iter().take_while(|s| *s == "super").count();
                for _ in 0..supers {
                    base.pop();
                }
                &segments[supers..]
            }
            // A bare name: a sibling only when the parent has a module of
            // that name (reached through `use super::*`); anything else is
            // a local item, a child module or another crate.
            _ => {
                base.pop();
                let mut sibling = base.clone();
                sibling.push(first.clone());
                if !self.module.is_empty() {
                    self.graph
                        .uses
                        .entry(self.module.clone())
                        .or_default()
                        .insert(sibling);
                }
                return;
            }
        };
        base.extend(rest.iter().cloned());
        self.graph
            .uses
            .entry(self.module.clone())
            .or_default()
            .insert(base);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.use_name(prefix);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.use_name(prefix);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.use_name(prefix),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    fn use_name(&mut self, segments: &[String]) {
        // `use self::x` / `use x::...` of a child is not a sibling edge; a
        // bare first segment in a `use` is another crate (edition 2018+).
        if matches!(
            segments.first().map(String::as_str),
            Some("crate" | "self" | "super")
        ) {
            self.named(segments);
        }
    }
}

impl<'a> Visit<'a> for UseVisitor<'_> {
    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        if is_test_attr(&m.attrs) {
            return;
        }
        if m.content.is_some() {
            self.module.push(m.ident.to_string());
            self.graph.modules.insert(self.module.clone());
            syn::visit::visit_item_mod(self, m);
            self.module.pop();
        }
    }
    fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
        if !is_test_attr(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }
    fn visit_item_impl(&mut self, i: &'a syn::ItemImpl) {
        if !is_test_attr(&i.attrs) {
            syn::visit::visit_item_impl(self, i);
        }
    }
    fn visit_item_use(&mut self, u: &'a syn::ItemUse) {
        if is_test_attr(&u.attrs) {
            return;
        }
        if self.module.is_empty() {
            // Root re-exports, so `crate::Name` can be followed.
            let mut names = Vec::new();
            flatten_use(&mut Vec::new(), &u.tree, &mut names);
            for (alias, path) in names {
                let path: ModPath = match path.first().map(String::as_str) {
                    Some("crate" | "self") => path[1..].to_vec(),
                    _ => path,
                };
                self.graph.reexports.insert(alias, path);
            }
        }
        self.use_tree(&mut Vec::new(), &u.tree);
    }
    fn visit_path(&mut self, p: &'a syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 {
            self.named(&segments);
        }
        syn::visit::visit_path(self, p);
    }
}

fn flatten_use(prefix: &mut Vec<String>, tree: &syn::UseTree, out: &mut Vec<(String, ModPath)>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten_use(prefix, &p.tree, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut full = prefix.clone();
            full.push(n.ident.to_string());
            out.push((n.ident.to_string(), full));
        }
        syn::UseTree::Rename(r) => {
            let mut full = prefix.clone();
            full.push(r.ident.to_string());
            out.push((r.rename.to_string(), full));
        }
        syn::UseTree::Glob(_) => {}
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten_use(prefix, t, out);
            }
        }
    }
}

impl ModuleGraph {
    /// Sibling edges: for every module, which of its siblings (children of
    /// the same parent) it names. A module naming its parent or its own
    /// children is not an edge; that is how a tree of modules is read.
    pub fn sibling_edges(&self) -> BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> {
        let mut by_parent: BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        for (from, targets) in &self.uses {
            for target in targets {
                let target = self.resolve(target);
                let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
                if common >= from.len() || common >= target.len() {
                    continue;
                }
                let parent = from[..common].to_vec();
                let mut sibling = parent.clone();
                sibling.push(target[common].clone());
                if !self.modules.contains(&sibling) {
                    continue;
                }
                by_parent
                    .entry(parent)
                    .or_default()
                    .entry(from[common].clone())
                    .or_default()
                    .insert(target[common].clone());
            }
        }
        by_parent
    }

    fn resolve(&self, target: &ModPath) -> ModPath {
        match target.first().and_then(|n| self.reexports.get(n)) {
            Some(origin) if !self.modules.contains(&target[..1]) => {
                let mut p = origin.clone();
                p.extend(target[1..].iter().cloned());
                p
            }
            _ => target.clone(),
        }
    }

    /// Every cycle among siblings, each as its modules in order
    /// (`parent::a -> parent::b -> parent::a`), one per strongly
    /// connected group.
    pub fn cycles(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (parent, edges) in self.sibling_edges() {
            for group in strongly_connected(&edges) {
                let prefix = if parent.is_empty() {
                    String::new()
                } else {
                    format!("{}::", parent.join("::"))
                };
                let cycle = one_cycle(&edges, &group);
                out.push(
                    cycle
                        .iter()
                        .map(|m| format!("{prefix}{m}"))
                        .collect::<Vec<_>>()
                        .join(" -> "),
                );
            }
        }
        out
    }
}

/// Tarjan-free, quadratic and plenty for a crate's modules: the groups of
/// two or more nodes that reach each other.
fn strongly_connected(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let nodes: BTreeSet<String> = edges
        .keys()
        .cloned()
        .chain(edges.values().flatten().cloned())
        .collect();
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (n, reach(n))).collect();
    let mut groups: Vec<BTreeSet<String>> = Vec::new();
    for n in &nodes {
        if groups.iter().any(|g| g.contains(n)) || !reaches[n].contains(n) {
            continue;
        }
        let group: BTreeSet<String> = nodes
            .iter()
            .filter(|m| reaches[n].contains(*m) && reaches[*m].contains(n))
            .cloned()
            .collect();
        groups.push(group);
    }
    groups
}

/// One concrete cycle through a group, shortest from its first member.
fn one_cycle(edges: &BTreeMap<String, BTreeSet<String>>, group: &BTreeSet<String>) -> Vec<String> {
    let start = group.iter().next().unwrap().clone();
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    while let Some(n) = queue.pop_front() {
        for m in edges
            .get(&n)
            .into_iter()
            .flatten()
            .filter(|m| group.contains(*m))
        {
            if *m == start {
                let mut path = vec![start.clone()];
                let mut at = n.clone();
                while at != start {
                    path.push(at.clone());
                    at = prev[&at].clone();
                }
                path.push(start.clone());
                let last = path.len() - 1;
                path[1..last].reverse();
                return path;
            }
            if !prev.contains_key(m) {
                prev.insert(m.clone(), n.clone());
                queue.push_back(m.clone());
            }
        }
    }
    group.iter().cloned().collect()
}
