// placeholder: runs.js is being written
"use strict";
