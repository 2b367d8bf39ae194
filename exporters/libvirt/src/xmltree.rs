//! A small element tree over quick-xml, with namespaces resolved.
//!
//! Domain XMLs are a few kilobytes and are parsed only when a domain is new or changed, so a
//! tree is affordable and makes the readers (`domain_xml`, `nova`) plain lookups instead of state
//! machines. Each element keeps its namespace URI: nova's metadata is recognised by namespace,
//! whatever prefix nova (or an operator) chose.
#![forbid(unsafe_code)]

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use crate::error::ParseError;

/// Deepest nesting kept; a domain XML is about 6 levels deep. Elements below it (other
/// applications' metadata: libvirt accepts 256 levels) are skipped, not fatal, so they cannot
/// hide a domain's nova metadata and pinning; the tree stays shallow for its recursive drop.
const MAX_DEPTH: usize = 64;

/// One element.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Element {
    /// Namespace URI, if the name is bound to one.
    pub ns: Option<String>,
    /// Local name (without prefix).
    pub name: String,
    /// Attributes by local name, in document order.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    /// Concatenated text directly inside the element, trimmed.
    pub text: String,
}

impl Element {
    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child named `name` (any namespace).
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Children named `name` (any namespace).
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Follows a path of child names.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        let mut e = self;
        for n in names {
            e = e.child(n)?;
        }
        Some(e)
    }

    /// Text of the child at `names`, if present and not empty.
    pub fn text_at(&self, names: &[&str]) -> Option<&str> {
        self.path(names)
            .map(|e| e.text.as_str())
            .filter(|t| !t.is_empty())
    }
}

fn element_from(ns: &ResolveResult<'_>, start: &BytesStart<'_>) -> Result<Element, ParseError> {
    let ns = match ns {
        ResolveResult::Bound(n) => Some(AsRef::<str>::as_ref(n).to_string()),
        ResolveResult::Unbound => None,
        ResolveResult::Unknown(p) => {
            return Err(ParseError::Xml(format!("unknown namespace prefix {p:?}")))
        }
    };
    let name = AsRef::<str>::as_ref(&start.local_name()).to_string();
    let mut attrs = Vec::new();
    for a in start.attributes() {
        let a = a.map_err(|e| ParseError::Xml(e.to_string()))?;
        let key: &str = a.key.as_ref();
        if key.starts_with("xmlns") {
            continue;
        }
        let local = AsRef::<str>::as_ref(&a.key.local_name()).to_string();
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| ParseError::Xml(e.to_string()))?
            .into_owned();
        attrs.push((local, value));
    }
    Ok(Element {
        ns,
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

/// Parses a document into its root element.
pub fn parse_tree(xml: &str) -> Result<Element, ParseError> {
    let mut reader = NsReader::from_str(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    // Open elements below MAX_DEPTH, skipped.
    let mut skipped: usize = 0;
    loop {
        let pos = reader.buffer_position();
        let (ns, ev) = reader
            .read_resolved_event()
            .map_err(|e| ParseError::Xml(format!("after byte {pos}: {e}")))?;
        match ev {
            Event::Start(_) if skipped > 0 || stack.len() >= MAX_DEPTH => skipped += 1,
            Event::Empty(_) if skipped > 0 || stack.len() >= MAX_DEPTH => {}
            Event::End(_) if skipped > 0 => skipped -= 1,
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) if skipped > 0 => {}
            Event::Start(s) => {
                let el = element_from(&ns, &s)?;
                stack.push(el);
            }
            Event::Empty(s) => {
                let el = element_from(&ns, &s)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None if root.is_none() => root = Some(el),
                    None => return Err(ParseError::Xml("more than one root element".into())),
                }
            }
            Event::End(_) => {
                let Some(mut el) = stack.pop() else {
                    return Err(ParseError::Xml("unbalanced end tag".into()));
                };
                el.text = el.text.trim().to_string();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None if root.is_none() => root = Some(el),
                    None => return Err(ParseError::Xml("more than one root element".into())),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t);
                }
            }
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    _ => match &*r {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(ParseError::Xml(format!("unknown entity &{other};"))),
                    },
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push(ch);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() || skipped > 0 {
        return Err(ParseError::Xml("unexpected end of document".into()));
    }
    root.ok_or_else(|| ParseError::Xml("empty document".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_text_and_entities() {
        let t = parse_tree(
            r#"<a xmlns:x="urn:x"><x:b k="v&amp;w">one &amp; two &#65;</x:b><c/><y:d xmlns:y="urn:x"/></a>"#,
        )
        .unwrap();
        assert_eq!(t.name, "a");
        let b = t.child("b").unwrap();
        assert_eq!(b.ns.as_deref(), Some("urn:x"));
        assert_eq!(b.attr("k"), Some("v&w"));
        assert_eq!(b.text, "one & two A");
        assert_eq!(t.child("d").unwrap().ns.as_deref(), Some("urn:x"));
        assert_eq!(t.child("c").unwrap().ns, None);
    }

    #[test]
    fn elements_below_the_depth_limit_are_skipped_not_fatal() {
        let deep = format!(
            "{}x{}",
            "<d>".repeat(MAX_DEPTH * 2),
            "</d>".repeat(MAX_DEPTH * 2)
        );
        let t = parse_tree(&format!("<a><m>{deep}<e/></m><b k='v'>t</b></a>")).unwrap();
        assert_eq!(t.child("b").and_then(|b| b.attr("k")), Some("v"));
        assert_eq!(t.path(&["b"]).map(|b| b.text.as_str()), Some("t"));
        let m = t.child("m").unwrap();
        assert!(
            m.child("e").is_some(),
            "the sibling after the deep part is kept"
        );
        let mut depth = 0;
        let mut e = m;
        while let Some(c) = e.child("d") {
            depth += 1;
            e = c;
        }
        assert!(depth < MAX_DEPTH, "{depth}");
        // Still checked for balance below the limit.
        let broken = format!("<a>{}</a>", "<d>".repeat(MAX_DEPTH * 2));
        assert!(parse_tree(&broken).is_err());
    }

    #[test]
    fn malformed_is_an_error() {
        for bad in [
            "",
            "<a>",
            "<a></b>",
            "<a/><b/>",
            "<p:a/>",
            "<a>&bogus;</a>",
            "</a>",
        ] {
            assert!(parse_tree(bad).is_err(), "{bad:?} accepted");
        }
    }
}
