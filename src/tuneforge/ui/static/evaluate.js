// placeholder: evaluate.js is being written
"use strict";
