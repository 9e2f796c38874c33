/* The API reference: swagger-ui-dist (installed by deploy/local/console-vendor.sh) over /v3/api-docs. */
(function () {
  'use strict';
  var box = document.getElementById('swagger-ui');
  if (!window.SwaggerUIBundle) {
    box.textContent = 'swagger-ui is not installed in the vendor folder (deploy/local/console-vendor.sh); ' +
                      'the OpenAPI document is at /v3/api-docs.';
    return;
  }
  window.SwaggerUIBundle({ url: '/v3/api-docs', dom_id: '#swagger-ui', deepLinking: true });
})();
