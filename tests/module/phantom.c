/* A library the "missing dependency" stub module links, kept off every loader path. */
__attribute__((visibility("default"))) int gpurnn_test_phantom(void);
int gpurnn_test_phantom(void) { return 1; }
