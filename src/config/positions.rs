//! Where each field is written: a map from field path to line and column.
//!
//! Exists because serde_yaml's `Value` and our typed structs carry no
//! positions, yet a validation error ("unknown backend") must name the line.
//! The index is built from a second, event-level pass over the same text with
//! `yaml-rust2`, whose events carry markers. It is best effort: when a path is
//! not in the index (aliases, a parser disagreement) the nearest indexed
//! ancestor is used, and at worst the error has no position.

use std::collections::{HashMap, HashSet};
use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

use super::error::Position;

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    /// A mapping key, e.g. `routes` or a backend name.
    Key(String),
    /// A sequence index, e.g. the `1` of `routes[1]`.
    Index(usize),
}

/// A field path such as `backends.echo.servers[0].url`.
///
/// Built step by step by the validator and printed in error messages; the
/// same value is the key of the [`PositionIndex`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct FieldPath(Vec<Seg>);

impl FieldPath {
    /// The root of the document.
    pub(crate) fn root() -> FieldPath {
        FieldPath(Vec::new())
    }

    /// This path extended by a mapping key.
    pub(crate) fn key(&self, key: &str) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        FieldPath(segs)
    }

    /// This path extended by a sequence index.
    pub(crate) fn index(&self, index: usize) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        FieldPath(segs)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Positions of the nodes of the first YAML document, by field path.
///
/// A scalar is located at its first character; a mapping or sequence that is
/// the value of a key is located at that key (the line an operator reads as
/// "the `echo:` backend"); a sequence item at its first character.
#[derive(Debug, Default)]
pub(crate) struct PositionIndex {
    nodes: HashMap<Vec<Seg>, Position>,
    /// Keys written a second time in the same mapping, in document order.
    duplicates: Vec<(Vec<Seg>, Position)>,
}

impl PositionIndex {
    /// Indexes `text`. Never fails: YAML errors leave the index partial.
    pub(crate) fn build(text: &str) -> PositionIndex {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        // Pull events one by one: `Parser::load` recurses per nesting level
        // and a deeply nested file would overflow the stack. Errors are
        // reported by serde_yaml, which parses the same text; whatever was
        // indexed before an error stays usable.
        while let Ok((event, mark)) = parser.next_token() {
            let end = matches!(event, Event::StreamEnd | Event::DocumentEnd);
            builder.on_event(event, mark);
            if end || builder.done {
                break;
            }
        }
        PositionIndex {
            nodes: builder.nodes,
            duplicates: builder.duplicates,
        }
    }

    /// The first key written twice in one mapping: its path and the position
    /// of the second occurrence.
    pub(crate) fn first_duplicate(&self) -> Option<(FieldPath, Position)> {
        self.duplicates
            .first()
            .map(|(segs, pos)| (FieldPath(segs.clone()), *pos))
    }

    /// Position of `path`, or of its nearest indexed ancestor.
    pub(crate) fn find(&self, path: &FieldPath) -> Option<Position> {
        let mut segs: &[Seg] = &path.0;
        loop {
            if let Some(pos) = self.nodes.get(segs) {
                return Some(*pos);
            }
            match segs.split_last() {
                Some((_, parent)) => segs = parent,
                None => return None,
            }
        }
    }
}

/// Nodes nested deeper than this are not indexed.
const MAX_DEPTH: usize = 32;

/// A collection being walked.
#[derive(Debug)]
enum Frame {
    Map {
        /// True when the next node is a key.
        awaiting_key: bool,
        /// The current key (None for a non-scalar key) and where it is.
        key: Option<(String, Position)>,
        /// Whether this collection added a segment to the path.
        pushed: bool,
        /// A path whose position is to be replaced by that of the first
        /// key: a block mapping's start marker points past its first key.
        relocate: Option<Vec<Seg>>,
        /// Keys seen so far, to spot one written twice.
        keys: HashSet<String>,
    },
    Seq {
        next: usize,
        pushed: bool,
    },
}

/// Receives parser events and records node positions.
#[derive(Debug, Default)]
struct Builder {
    stack: Vec<Frame>,
    path: Vec<Seg>,
    nodes: HashMap<Vec<Seg>, Position>,
    duplicates: Vec<(Vec<Seg>, Position)>,
    /// Set after the first document's root node is complete.
    done: bool,
}

fn position(mark: &Marker) -> Position {
    Position {
        line: mark.line(),
        column: mark.col().saturating_add(1),
    }
}

impl Builder {
    /// Handles the start of a node: a scalar, an alias, or a collection.
    fn node(&mut self, pos: Position, scalar: Option<&str>, collection: Option<Frame>) {
        let is_collection = collection.is_some();
        let is_root = self.stack.is_empty();
        // Decide the path segment for this node, if it is a value.
        let mut segment: Option<(Seg, Position)> = None;
        match self.stack.last_mut() {
            None => {
                self.nodes.entry(Vec::new()).or_insert(pos);
            }
            Some(Frame::Map {
                awaiting_key,
                key,
                relocate,
                keys,
                ..
            }) => {
                if *awaiting_key {
                    *key = scalar.map(|s| (s.to_owned(), pos));
                    if let Some(name) = scalar.filter(|_| self.path.len() < MAX_DEPTH) {
                        if !keys.insert(name.to_owned()) {
                            let mut full = self.path.clone();
                            full.push(Seg::Key(name.to_owned()));
                            self.duplicates.push((full, pos));
                        }
                    }
                    if let Some(path) = relocate.take() {
                        self.nodes.insert(path, pos);
                    }
                } else {
                    let (seg, at) = match key {
                        Some((k, key_pos)) => (
                            Seg::Key(k.clone()),
                            if is_collection { *key_pos } else { pos },
                        ),
                        None => (Seg::Key(String::from("?")), pos),
                    };
                    segment = Some((seg, at));
                }
            }
            Some(Frame::Seq { next, .. }) => {
                segment = Some((Seg::Index(*next), pos));
                *next = next.saturating_add(1);
            }
        }
        // Deeper nodes are not indexed: no config field is that deep, and
        // storing whole paths would cost depth² for a hostile file.
        let shallow = self.path.len() < MAX_DEPTH;
        let mut full = Vec::new();
        if shallow {
            full = self.path.clone();
            if let Some((seg, at)) = &segment {
                full.push(seg.clone());
                self.nodes.entry(full.clone()).or_insert(*at);
            }
        }
        match collection {
            Some(mut frame) => {
                if let Frame::Map { relocate, .. } = &mut frame {
                    // A mapping value is located by its key already; the root
                    // and sequence items take their first key's position.
                    let item = matches!(segment, Some((Seg::Index(_), _)));
                    if shallow && (is_root || item) {
                        *relocate = Some(full);
                    }
                }
                if let Some((seg, _)) = segment {
                    self.path.push(seg);
                    match &mut frame {
                        Frame::Map { pushed, .. } | Frame::Seq { pushed, .. } => *pushed = true,
                    }
                }
                self.stack.push(frame);
            }
            None => self.complete(),
        }
    }

    /// A node ended: a mapping parent now expects the other half of a pair.
    fn complete(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { awaiting_key, .. }) => *awaiting_key = !*awaiting_key,
            Some(Frame::Seq { .. }) => {}
            None => self.done = true,
        }
    }

    fn end_collection(&mut self) {
        let pushed = match self.stack.pop() {
            Some(Frame::Map { pushed, .. }) | Some(Frame::Seq { pushed, .. }) => pushed,
            None => false,
        };
        if pushed {
            self.path.pop();
        }
        self.complete();
    }
}

impl Builder {
    /// Handles one parser event.
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        let pos = position(&mark);
        match ev {
            Event::Scalar(ref value, ..) => self.node(pos, Some(value), None),
            Event::Alias(_) => self.node(pos, None, None),
            Event::SequenceStart(..) => self.node(
                pos,
                None,
                Some(Frame::Seq {
                    next: 0,
                    pushed: false,
                }),
            ),
            Event::MappingStart(..) => self.node(
                pos,
                None,
                Some(Frame::Map {
                    awaiting_key: true,
                    key: None,
                    pushed: false,
                    relocate: None,
                    keys: HashSet::new(),
                }),
            ),
            Event::SequenceEnd | Event::MappingEnd => self.end_collection(),
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(index: &PositionIndex, path: &FieldPath) -> Option<(usize, usize)> {
        index.find(path).map(|p| (p.line, p.column))
    }

    #[test]
    fn block_and_flow_positions() {
        let text = "\
listeners:
  - bind: \"127.0.0.1:8443\"
    tls: { cert: /c.pem, key: /k.pem }
routes:
  - path_prefix: /echo
    backend: echo
backends:
  echo:
    servers:
      - url: ws://a
      - url: ws://b
";
        let idx = PositionIndex::build(text);
        let root = FieldPath::root();
        assert_eq!(at(&idx, &root), Some((1, 1)));
        let l0 = root.key("listeners").index(0);
        assert_eq!(at(&idx, &root.key("listeners")), Some((1, 1)));
        assert_eq!(at(&idx, &l0), Some((2, 5)));
        assert_eq!(at(&idx, &l0.key("bind")), Some((2, 11)));
        assert_eq!(at(&idx, &l0.key("tls")), Some((3, 5)));
        assert_eq!(at(&idx, &l0.key("tls").key("cert")), Some((3, 18)));
        assert_eq!(at(&idx, &l0.key("tls").key("key")), Some((3, 31)));
        let r0 = root.key("routes").index(0);
        assert_eq!(at(&idx, &r0.key("backend")), Some((6, 14)));
        let echo = root.key("backends").key("echo");
        assert_eq!(at(&idx, &echo), Some((8, 3)));
        assert_eq!(at(&idx, &echo.key("servers")), Some((9, 5)));
        assert_eq!(
            at(&idx, &echo.key("servers").index(1).key("url")),
            Some((11, 14))
        );
        assert!(idx.first_duplicate().is_none());
        // Missing paths fall back to the nearest ancestor.
        assert_eq!(at(&idx, &echo.key("retries")), Some((8, 3)));
        assert_eq!(
            echo.key("servers").index(1).key("url").to_string(),
            "backends.echo.servers[1].url"
        );
    }

    #[test]
    fn duplicate_keys_are_recorded() {
        let text = "a:\n  b: 1\n  c: 2\n  b: 3\nd: 4\nd: 5\n";
        let idx = PositionIndex::build(text);
        let (path, pos) = idx.first_duplicate().expect("a duplicate");
        assert_eq!(path.to_string(), "a.b");
        assert_eq!((pos.line, pos.column), (4, 3));
    }

    #[test]
    fn broken_yaml_gives_partial_index() {
        let idx = PositionIndex::build("a: 1\nb: [\n");
        assert_eq!(at(&idx, &FieldPath::root().key("a")), Some((1, 4)));
        let idx = PositionIndex::build("");
        assert_eq!(at(&idx, &FieldPath::root().key("a")), None);
    }

    #[test]
    fn complex_keys_and_aliases_do_not_confuse() {
        let text = "x: &A {y: 1}\nz: *A\n? {k: 1}\n: 1\nw: 2\n";
        let idx = PositionIndex::build(text);
        assert_eq!(at(&idx, &FieldPath::root()), Some((1, 1)));
        assert_eq!(
            at(&idx, &FieldPath::root().key("x").key("y")),
            Some((1, 11))
        );
        assert_eq!(at(&idx, &FieldPath::root().key("w")), Some((5, 4)));
        assert_eq!(at(&idx, &FieldPath::root().key("z")), Some((2, 4)));
    }
}
