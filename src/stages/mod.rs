//! Pipeline stages, one file and one entry point each. A stage reads files and settings and
//! writes files under the data or run directory; recording it in the catalogue is a separate
//! step, so a stage can run where the catalogue is not.

pub mod embed;
pub mod ensemble;
pub mod evaluate;
pub mod fetch;
pub mod prepare;
pub mod released;
pub mod train;
pub mod weights;
