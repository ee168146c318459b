//! The report as data: each section is a value (title, paper reference, blocks of text,
//! tables, figures and claims) and one renderer turns the whole into markdown. Tables come from
//! one type, so every markdown table has the same shape and escaping.

use std::fmt::Write as _;

use crate::claims::Claim;

/// A markdown table: a header row and rows of cells (`|` in a cell is escaped).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MdTable {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl MdTable {
    pub fn new<S: AsRef<str>>(header: &[S]) -> Self {
        MdTable {
            header: header.iter().map(|h| h.as_ref().to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; its cell count must match the header's.
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(
            cells.len(),
            self.header.len(),
            "a row of {} cells under a header of {}",
            cells.len(),
            self.header.len()
        );
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(&self.header);
        out.push_str(&format!("|{}\n", "---|".repeat(self.header.len())));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// One piece of a section, in reading order.
#[derive(Clone, Debug)]
pub enum Block {
    /// A paragraph of markdown.
    Text(String),
    Table(MdTable),
    /// A PNG under `figures/`, with its caption (bold above it when `titled`).
    Figure {
        caption: String,
        file: String,
        titled: bool,
    },
    /// A claim: its evidence table and verdict here, and a row in the summary.
    Claim(Claim),
}

/// A section of the report: `## title (paper reference): `stage``.
#[derive(Clone, Debug)]
pub struct Section {
    pub title: String,
    /// Where the paper has it (`§4.2, Fig. 7`); empty for sections of our own.
    pub paper_reference: String,
    /// The stage whose artifacts it shows, if one.
    pub stage: Option<String>,
    pub blocks: Vec<Block>,
}

impl Section {
    pub fn new(title: &str, paper_reference: &str, stage: Option<String>) -> Self {
        Section {
            title: title.to_owned(),
            paper_reference: paper_reference.to_owned(),
            stage,
            blocks: Vec::new(),
        }
    }

    pub fn text(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Text(text.into()));
        self
    }

    pub fn table(&mut self, table: MdTable) -> &mut Self {
        self.blocks.push(Block::Table(table));
        self
    }

    pub fn figure(&mut self, caption: &str, file: &str, titled: bool) -> &mut Self {
        self.blocks.push(Block::Figure {
            caption: caption.to_owned(),
            file: file.to_owned(),
            titled,
        });
        self
    }

    pub fn claim(&mut self, claim: Claim) -> &mut Self {
        self.blocks.push(Block::Claim(claim));
        self
    }

    /// Makes every claim of the section INCONCLUSIVE for `why` (one that has a blocker keeps
    /// it).
    pub fn block_claims(&mut self, why: &str) {
        for block in &mut self.blocks {
            if let Block::Claim(claim) = block
                && claim.blocker.is_none()
            {
                claim.blocker = Some(why.to_owned());
            }
        }
    }

    pub fn claims(&self) -> impl Iterator<Item = &Claim> {
        self.blocks.iter().filter_map(|b| match b {
            Block::Claim(c) => Some(c),
            _ => None,
        })
    }

    /// The heading's anchor as GitHub renders it (lowercase, spaces to `-`, punctuation out).
    pub fn anchor(&self) -> String {
        heading_anchor(&self.heading())
    }

    fn heading(&self) -> String {
        let mut heading = self.title.clone();
        if !self.paper_reference.is_empty() {
            let _ = write!(heading, " ({})", self.paper_reference);
        }
        if let Some(stage) = &self.stage {
            let _ = write!(heading, ": `{stage}`");
        }
        heading
    }

    pub fn render(&self) -> String {
        let mut md = format!("## {}\n\n", self.heading());
        for block in &self.blocks {
            match block {
                Block::Text(text) => {
                    let _ = writeln!(md, "{text}\n");
                }
                Block::Table(table) => {
                    let _ = writeln!(md, "{}", table.render());
                }
                Block::Figure {
                    caption,
                    file,
                    titled,
                } => {
                    if *titled {
                        let _ = writeln!(md, "**{caption}**\n");
                    }
                    let _ = writeln!(md, "![{caption}](figures/{file})\n");
                }
                Block::Claim(claim) => md.push_str(&claim.render()),
            }
        }
        md
    }
}

/// GitHub's anchor for a heading: lowercase; letters, digits, `-`, `_` and spaces kept (spaces
/// become `-`), everything else dropped.
pub fn heading_anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_one_way_and_escape_pipes() {
        let mut t = MdTable::new(&["a", "b"]);
        t.row(vec!["1".into(), "x|y".into()]);
        assert_eq!(t.render(), "| a | b |\n|---|---|\n| 1 | x\\|y |\n");
    }

    #[test]
    #[should_panic(expected = "a row of 1 cells under a header of 2")]
    fn a_row_of_the_wrong_width_is_a_bug() {
        MdTable::new(&["a", "b"]).row(vec!["1".into()]);
    }

    #[test]
    fn a_model_that_did_not_train_blocks_every_claim_of_its_section() {
        use crate::claims::{Comparison, Verdict};
        let clear = stats::Estimate::paired(&[60.0, 62.0, 61.0], &[40.0, 41.0, 43.0]).unwrap();
        let mut section = Section::new("Occlusion", "Fig. 7", None);
        section
            .claim(Claim::new("Fig. 7 (d)", "x", "y").compare(Comparison::new("5 images", clear)));
        assert_eq!(section.claims().next().unwrap().verdict(), Verdict::Pass);
        section.block_claims("the model did not train");
        assert_eq!(
            section.claims().next().unwrap().verdict(),
            Verdict::Inconclusive("the model did not train".to_owned())
        );
    }

    #[test]
    fn anchors_follow_githubs_rule() {
        assert_eq!(
            heading_anchor("Occlusion sensitivity (§4.2, Fig. 7): `occlusion`"),
            "occlusion-sensitivity-42-fig-7-occlusion"
        );
    }
}
