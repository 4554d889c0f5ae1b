//! Stanford Online Products: `Ebay_train.txt` (11,318 classes) and `Ebay_test.txt` (11,316).

use super::{field, read_text, table_rows, LayoutError};
use crate::data::index::{DatasetIndex, ImageEntry, Split};
use std::path::Path;

/// Image ids are assigned in file order (train file, then test file) rather than taken from the
/// files, so they are unique whatever numbering the two files use.
pub fn parse(root: &Path) -> Result<DatasetIndex, LayoutError> {
    let mut images = Vec::new();
    for (file, split) in [
        ("Ebay_train.txt", Split::Train),
        ("Ebay_test.txt", Split::Test),
    ] {
        let path = root.join(file);
        let text = read_text(&path)?;
        let mut rows = table_rows(&text, 4);
        match rows.next() {
            Some((_, h)) if h.first() == Some(&"image_id") => {}
            _ => {
                return Err(LayoutError::Invalid {
                    path,
                    message: "expected the header `image_id class_id super_class_id path`".into(),
                })
            }
        }
        for (line, row) in rows {
            let class_id: i64 = field(&path, line, &row, 1, "class id")?;
            let rel: String = field(&path, line, &row, 3, "path")?;
            images.push(ImageEntry {
                image_id: images.len() as i64 + 1,
                rel_path: rel,
                class_id,
                split,
                bbox: None,
            });
        }
    }
    Ok(DatasetIndex { images })
}
