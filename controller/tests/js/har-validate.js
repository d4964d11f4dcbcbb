// Validates HAR files against the HAR 1.2 schema with har-validator.
// usage: node har-validate.js NODE_MODULES_DIR FILE...
'use strict';
const fs = require('fs');
const path = require('path');
const validate = require(path.join(process.argv[2], 'har-validator'));

(async () => {
  let invalid = 0;
  for (const file of process.argv.slice(3)) {
    try {
      await validate.har(JSON.parse(fs.readFileSync(file, 'utf8')));
      console.log(`valid ${file}`);
    } catch (e) {
      invalid += 1;
      console.error(`invalid ${file}: ${JSON.stringify(e.errors || e.message, null, 1)}`);
    }
  }
  process.exit(invalid ? 1 : 0);
})();
