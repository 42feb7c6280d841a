//! The image service's records, kept in the daemon's metadata store.

use std::sync::Arc;

use imageservice::record::{CatalogError, ImageCatalog, ImageRecord};

use crate::metadata::{MetadataStore, Table};

pub struct MetadataCatalog(pub Arc<MetadataStore>);

impl ImageCatalog for MetadataCatalog {
    fn load(&self) -> Result<Vec<ImageRecord>, CatalogError> {
        self.0
            .list(Table::Images)
            .map_err(|e| CatalogError(e.to_string()))
    }

    fn save(&self, image: &ImageRecord) -> Result<(), CatalogError> {
        self.0
            .put(Table::Images, &image.id, None, image)
            .map_err(|e| CatalogError(e.to_string()))
    }

    fn delete(&self, id: &str) -> Result<(), CatalogError> {
        self.0
            .delete(Table::Images, id)
            .map(|_| ())
            .map_err(|e| CatalogError(e.to_string()))
    }
}
