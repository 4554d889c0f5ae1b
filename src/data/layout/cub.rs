//! CUB-200-2011 (and the demo glyphs, laid out the same way).

use super::{field, read_text, table_rows, LayoutError};
use crate::data::index::{class_halves, BBox, DatasetIndex, ImageEntry};
use std::collections::HashMap;
use std::path::Path;

pub fn parse(root: &Path) -> Result<DatasetIndex, LayoutError> {
    let images_txt = root.join("images.txt");
    let labels_txt = root.join("image_class_labels.txt");
    let boxes_txt = root.join("bounding_boxes.txt");

    let mut labels = HashMap::new();
    for (line, row) in table_rows(&read_text(&labels_txt)?, 2) {
        let id: i64 = field(&labels_txt, line, &row, 0, "image id")?;
        labels.insert(id, field::<i64>(&labels_txt, line, &row, 1, "class id")?);
    }
    let mut boxes = HashMap::new();
    if boxes_txt.exists() {
        for (line, row) in table_rows(&read_text(&boxes_txt)?, 5) {
            let v = |i, what| field::<f64>(&boxes_txt, line, &row, i, what);
            let (x, y, w, h) = (v(1, "x")?, v(2, "y")?, v(3, "width")?, v(4, "height")?);
            let id: i64 = field(&boxes_txt, line, &row, 0, "image id")?;
            boxes.insert(
                id,
                BBox {
                    x1: x,
                    y1: y,
                    x2: x + w,
                    y2: y + h,
                },
            );
        }
    }
    let split = class_halves(labels.values().copied());
    let mut images = Vec::new();
    for (line, row) in table_rows(&read_text(&images_txt)?, 2) {
        let image_id: i64 = field(&images_txt, line, &row, 0, "image id")?;
        let path: String = field(&images_txt, line, &row, 1, "path")?;
        let class_id = *labels.get(&image_id).ok_or_else(|| LayoutError::Parse {
            path: images_txt.clone(),
            line,
            message: format!("image {image_id} has no class in {}", labels_txt.display()),
        })?;
        images.push(ImageEntry {
            image_id,
            rel_path: format!("images/{path}"),
            class_id,
            split: split(class_id),
            bbox: boxes.get(&image_id).copied(),
        });
    }
    images.sort_by_key(|i| i.image_id);
    Ok(DatasetIndex { images })
}
