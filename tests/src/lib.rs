//! Helpers shared by the end-to-end tests (process guards, ports, scraping).
